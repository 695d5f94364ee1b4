//! Reading `-f` arguments: files, directories (their `*.yaml`/`*.yml`, sorted) or `-`
//! for standard input. An unreadable path is a usage error (exit 2).

use std::io::Read;
use std::path::Path;

use super::CliError;

/// (name shown in errors, content) for every document source named by `-f`.
pub(crate) fn read_all(paths: &[String]) -> Result<Vec<(String, String)>, CliError> {
    if paths.is_empty() {
        return Err(CliError::usage(
            "no rule files: pass -f FILE (a file, a directory or -)",
        ));
    }
    let mut files = Vec::new();
    for path in paths {
        if path == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("cannot read standard input: {e}")))?;
            files.push(("<stdin>".to_string(), text));
        } else if Path::new(path).is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| CliError::usage(format!("cannot read {path}: {e}")))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(CliError::usage(format!("{path}: no *.yaml or *.yml files")));
            }
            for p in entries {
                files.push(read_one(&p.to_string_lossy())?);
            }
        } else {
            files.push(read_one(path)?);
        }
    }
    Ok(files)
}

fn read_one(path: &str) -> Result<(String, String), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {path}: {e}")))?;
    Ok((path.to_string(), text))
}
