//! How one call reaches etcd: retried while no member could even be connected to,
//! and its error turned into the store's.

use std::time::Duration;

use etcd_client::Client;

use crate::store::StoreError;

/// etcd's client balances calls over the endpoints (power of two choices by pending
/// calls) and keeps a stopped member in rotation; having no pending calls (the
/// watches and lease keep-alives sit on the live ones), it is even preferred, so a
/// call may hit it many times in a row. A call that could not even connect reached
/// nobody, so it is sent again, with a short pause, for up to `CONNECT_RETRY_FOR`
/// before the caller hears that etcd is unavailable.
pub(super) async fn once_connected<T, Fut>(
    client: &Client,
    call: impl Fn(Client) -> Fut,
) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + CONNECT_RETRY_FOR;
    loop {
        match call(client.clone()).await {
            Err(e) if connect_failed(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
            }
            result => return result.map_err(unavailable),
        }
    }
}

/// How long calls whose connection was refused are retried (see `once_connected`):
/// 5 immediate attempts failed an apply now and then in CI while a 3-member etcd had
/// a stopped member. A refused connect costs well under a millisecond.
const CONNECT_RETRY_FOR: Duration = Duration::from_secs(2);
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(5);

fn connect_failed(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unavailable && s.message().contains("connect"))
}

pub(super) fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(super::tls::describe(&e))
}
