//! `graylane`: the CLI. Parses flags, runs the command, prints one line per error and
//! exits with the spec's code (0 ok, 1 refused, 2 usage, 3 unavailable).

use clap::Parser;
use graylane_control::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Output into a closed pipe (`graylane rules get | head`) ends the CLI as it ends
    // any Unix filter, by SIGPIPE. Rust ignores SIGPIPE, so the write fails instead,
    // and `println!` panics (exit 101, not one of the spec's codes).
    #[allow(unsafe_code)]
    // SAFETY: one libc call, first thing in main, restoring the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version (exit 0) or the usage error (exit 2) itself.
            e.exit()
        }
    };
    if let Err(e) = cli.run().await {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: {}", e.message);
        }
        std::process::exit(e.code);
    }
}
