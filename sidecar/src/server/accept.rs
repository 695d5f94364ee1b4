//! What the sidecar's listeners count of the shared accept loop
//! ([`graylane_serve::serve`]: connection limit, EMFILE/ENFILE backoff, drain): the
//! `graylane_connections_*` counters of each listener.

use std::sync::atomic::Ordering;

use crate::metrics::Connections;

impl graylane_serve::Observe for Connections {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    // Header timeouts are counted by `connection`, which times the first head from
    // accept across protocol sniffing and the mesh handshake.
}
