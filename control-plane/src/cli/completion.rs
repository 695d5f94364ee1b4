//! `graylane completion bash|zsh|fish`: the shell's completion script, generated from
//! the same clap definition that parses the command line, so it cannot drift.

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell as Generator;

use super::{Cli, CliError};

/// The shells a script is printed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// `source <(graylane completion bash)`, or save it under
    /// ~/.local/share/bash-completion/completions/graylane.
    Bash,
    /// Save it as `_graylane` in a directory on $fpath.
    Zsh,
    /// Save it as ~/.config/fish/completions/graylane.fish.
    Fish,
}

/// Prints the script on standard output.
pub(crate) fn run(shell: Shell) -> Result<(), CliError> {
    let generator = match shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, "graylane", &mut script);
    let script = String::from_utf8(script)
        .map_err(|e| CliError::unavailable(format!("completion script: {e}")))?;
    super::output::text(&script);
    Ok(())
}
