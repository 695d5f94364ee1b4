//! The descriptor limit: one socket per subscriber, on both sides of the connection.

use anyhow::ensure;

/// Raises the soft RLIMIT_NOFILE (inherited by the child) to at least `needed`, as far
/// as the hard limit allows; returns the soft limit in force.
pub fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit(2) writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    ensure!(rc == 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    ensure!(
        limit.rlim_max >= needed,
        "RLIMIT_NOFILE hard limit {} is below the {needed} descriptors needed",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    #[allow(unsafe_code)]
    // SAFETY: setrlimit(2) reads the struct; the new soft limit is within the hard one.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    ensure!(rc == 0, "setrlimit: {}", std::io::Error::last_os_error());
    Ok(needed)
}
