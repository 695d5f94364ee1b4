//! Where both servers' logs go and how they look: standard error, filtered by
//! `GRAYLANE_LOG`, as text or one JSON object a line (`--log-format`).

/// The `--log-format` values.
pub const LOG_FORMATS: [&str; 2] = ["text", "json"];

/// The `--help` paragraph on logging, the same for both servers.
pub const LOGGING_HELP: &str = "Logs go to standard error. GRAYLANE_LOG sets what is logged (an EnvFilter: `info`, `debug`, `graylane_sidecar=debug,info`; default `info` with hyper, h2, tonic and tower at `warn`); --log-format json writes one JSON object a line.";

/// Installs the process's logger; `format` is one of [`LOG_FORMATS`] (anything but
/// `json` is text).
pub fn init_logs(format: &str) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRAYLANE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,tonic=warn,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
