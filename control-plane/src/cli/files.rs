//! Reading `-f` arguments: files, directories (their `*.yaml`/`*.yml`, sorted) or `-`
//! for standard input. An unreadable path is a usage error (exit 2). A JSON `List`
//! (what `graylane -o json rules get` prints, kubectl's `kind: List`) is unpacked into
//! one document per item, so `rules get -o json | rules apply -f -` round-trips.

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
            let text = read_capped(std::io::stdin(), "standard input")?;
            files.push(("<stdin>".to_string(), unlist(text)));
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
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("cannot read {path}: {e}")))?;
    Ok((path.to_string(), unlist(read_capped(file, path)?)))
}

/// All of `input` as UTF-8, up to what one apply can send: `-f /dev/zero` or a wrong
/// file of gigabytes is refused once past it, instead of filling the memory.
fn read_capped(input: impl Read, name: &str) -> Result<String, CliError> {
    let limit = crate::api::MAX_MESSAGE;
    let mut bytes = Vec::new();
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::usage(format!("cannot read {name}: {e}")))?;
    if bytes.len() > limit {
        return Err(CliError::usage(format!(
            "{name}: over {} MiB, more than one apply can send",
            limit >> 20
        )));
    }
    String::from_utf8(bytes)
        .map_err(|e| CliError::usage(format!("cannot read {name}: not UTF-8 ({e})")))
}

/// The items of a JSON `List` as `---`-separated JSON documents (JSON is YAML, so the
/// one rules parser reads them, and item N is document N in its errors); any other
/// text as it is.
fn unlist(text: String) -> String {
    if !text.trim_start().starts_with('{') {
        return text;
    }
    // A key given twice fails here, and the text goes on as it is: the YAML parser
    // then refuses the duplicate, naming its line.
    let Ok(serde_json::Value::Object(list)) = graylane_routing::json_value(text.as_bytes()) else {
        return text;
    };
    let is_list = list.get("kind").is_none_or(|k| k == "List")
        && list
            .keys()
            .all(|k| ["apiVersion", "kind", "metadata", "revision", "items"].contains(&k.as_str()));
    match list.get("items") {
        Some(serde_json::Value::Array(items)) if is_list => items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_list_becomes_one_document_per_item() {
        let list = r#"{"apiVersion": "graylane.io/v1", "kind": "List", "revision": 3,
            "items": [{"kind": "Lane", "n": 1}, {"kind": "Lane", "n": 2}]}"#;
        assert_eq!(
            unlist(list.into()),
            "{\"kind\":\"Lane\",\"n\":1}\n---\n{\"kind\":\"Lane\",\"n\":2}"
        );
        assert_eq!(unlist(r#"{"kind": "List", "items": []}"#.into()), "");
    }

    #[test]
    fn other_text_is_left_alone() {
        for text in [
            "kind: Lane\n",
            r#"{"kind": "Lane", "items": []}"#,
            r#"{"kind": "List", "items": [], "extra": 1}"#,
            "{not json",
        ] {
            assert_eq!(unlist(text.into()), text);
        }
    }
}
