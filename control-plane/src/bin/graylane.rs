//! `graylane`: the CLI. Parses flags, runs the command, prints one line per error and
//! exits with the spec's code (0 ok, 1 refused, 2 usage, 3 unavailable).

use clap::Parser;
use graylane_control::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() {
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
