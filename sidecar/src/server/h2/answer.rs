//! A handler's future for one stream, ended early by the client's reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::proxy::streams::Shared;

pin_project_lite::pin_project! {
    /// The handler's future for one stream, ended early by the client's reset.
    pub(super) struct Answer<F> {
        pub(super) stream: u32,
        pub(super) shared: Arc<Shared>,
        #[pin]
        future: F,
    }
}

impl<F> Answer<F> {
    pub(super) fn new(stream: u32, shared: Arc<Shared>, future: F) -> Self {
        Self {
            stream,
            shared,
            future,
        }
    }
}

impl<F: Future> Future for Answer<F> {
    /// The stream, and the handler's answer: `None` if the stream was reset first.
    type Output = (u32, Option<F::Output>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        match me.future.poll(cx) {
            Poll::Ready(answer) => Poll::Ready((*me.stream, Some(answer))),
            Poll::Pending if me.shared.watch_reset(cx) => Poll::Ready((*me.stream, None)),
            Poll::Pending => Poll::Pending,
        }
    }
}
