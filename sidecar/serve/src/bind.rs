//! Binding a listener with the backlog a connection storm needs.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel queues before `accept`. A restarted control plane meets
/// every sidecar reconnecting at once, and a sidecar its app's burst: with a backlog of
/// 128, connections past it wait for SYN retries (1 + 2 + 4 + 8 s) — a 16 s tail seen
/// at 3,000 sidecars. The kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` with `SO_REUSEADDR` (a restart on the same port does not wait
/// for the old connections' TIME_WAIT) and a backlog of [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_port_0_and_accepts() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert!(client.is_ok() && accepted.is_ok());
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(
            bind(taken).is_err(),
            "SO_REUSEADDR must not allow two listeners"
        );
    }
}
