//! A connection lost before a whole answer head: the failure, said in our words,
//! and the request handed back when it had no body (`Failed::request`).

use std::io;

use super::*;

#[tokio::test]
async fn a_close_before_any_answer_reads_as_the_connection_lost() {
    match answered(b"", get("/")).await.0 {
        Err(Failed {
            error: PoolError::Exchange(e),
            request: Some(back),
            written: true,
        }) => {
            let io = e.downcast_ref::<io::Error>().expect("an I/O error");
            assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
            assert!(
                io.to_string().contains("mid-message, before any answer"),
                "{io}"
            );
            // Whole, to go again if its method allows: no copy made beforehand.
            assert_eq!(back.uri(), "/");
            assert_eq!(back.headers()["host"], "app");
        }
        _ => panic!("expected a lost connection, the request written and handed back"),
    }
}

#[tokio::test]
async fn a_close_mid_head_hands_back_a_body_less_request_only() {
    match answered(b"HTTP/1.1 200", get("/")).await.0 {
        Err(Failed {
            error: PoolError::Exchange(e),
            request: Some(back),
            written: true,
        }) => {
            assert!(e.to_string().contains("in the response head"), "{e}");
            assert_eq!(back.uri(), "/");
        }
        _ => panic!("expected a lost connection, the request handed back"),
    }
    let mut post = get("/");
    *post.method_mut() = http::Method::POST;
    *post.body_mut() = streamed(vec![Frame::data(Bytes::from_static(b"order"))]);
    match answered(b"HTTP/1.1 200", post).await.0 {
        Err(Failed { request: None, .. }) => {}
        _ => panic!("expected a failure without the request: its body has left"),
    }
}

#[tokio::test]
async fn a_reset_before_any_answer_reads_as_the_connection_lost_in_our_words() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream, &mut Vec::new()).await;
        // Closed with a reset, as a killed process with bytes unread is.
        stream.set_zero_linger().unwrap();
    });
    let idle = Idle::default();
    let text = error_text(send(conn(&address).await, get("/"), &idle).await);
    assert!(text.contains("mid-message, before any answer"), "{text}");
}
