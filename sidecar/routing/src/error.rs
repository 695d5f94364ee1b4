//! The one error type of rule validation, and where a resource came from.

use std::fmt;

/// The `file` of errors about resources that came from the store rather than a file.
pub const STORED_RULES: &str = "(stored rules)";

/// Where a resource was read from: a file and its 1-based document index (empty
/// documents count, so the index is the one a reader counts by `---`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file name as the caller gave it.
    pub file: String,
    /// 1-based document index within `file`.
    pub document: usize,
}

/// One validation error. `Display` is the line a user sees:
/// `rules.yaml: document 2 (RoutePolicy/orders): spec.default: weights sum to 95, must be 100`.
///
/// Parts that do not apply are left out: no `document N` for errors about a whole file
/// or for stored resources (`file` is then [`STORED_RULES`]); `(Kind/name)` shows what
/// was readable — `(Lane/gray)`, `(Lane)` without a name, `(?/gray)` without a kind;
/// no path for errors about the whole document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The file, or [`STORED_RULES`].
    pub file: String,
    /// 1-based document index, when the error is about one document of a file.
    pub document: Option<usize>,
    /// The document's `kind` as written, when it was a readable string.
    pub kind: Option<String>,
    /// The document's `metadata.name` as written, when it was a readable string.
    pub name: Option<String>,
    /// Field path (`spec.default[1].subset`); empty for the document or file itself.
    pub path: String,
    /// What is wrong, for a human.
    pub reason: String,
}

impl ValidationError {
    /// An error about a resource with this origin (or a stored one, without).
    pub(crate) fn for_resource(
        origin: Option<&Origin>,
        kind: &str,
        name: &str,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            file: origin.map_or_else(|| STORED_RULES.to_owned(), |o| o.file.clone()),
            document: origin.map(|o| o.document),
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(n) = self.document {
            write!(f, ": document {n}")?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k}/{n})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            (None, Some(n)) => write!(f, " (?/{n})")?,
            (None, None) => {}
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(document: Option<usize>, kind: Option<&str>, name: Option<&str>, path: &str) -> String {
        ValidationError {
            file: "rules.yaml".into(),
            document,
            kind: kind.map(Into::into),
            name: name.map(Into::into),
            path: path.into(),
            reason: "weights sum to 95, must be 100".into(),
        }
        .to_string()
    }

    #[test]
    fn display_matches_the_documented_format() {
        assert_eq!(
            err(Some(2), Some("RoutePolicy"), Some("orders"), "spec.default"),
            "rules.yaml: document 2 (RoutePolicy/orders): spec.default: weights sum to 95, must be 100"
        );
    }

    #[test]
    fn display_leaves_out_what_is_unknown() {
        assert_eq!(
            err(Some(1), None, None, ""),
            "rules.yaml: document 1: weights sum to 95, must be 100"
        );
        assert_eq!(
            err(Some(1), Some("Lane"), None, "x"),
            "rules.yaml: document 1 (Lane): x: weights sum to 95, must be 100"
        );
        assert_eq!(
            err(Some(1), None, Some("a"), "x"),
            "rules.yaml: document 1 (?/a): x: weights sum to 95, must be 100"
        );
        assert_eq!(
            err(None, None, None, ""),
            "rules.yaml: weights sum to 95, must be 100"
        );
    }

    #[test]
    fn stored_resources_have_no_document() {
        let e = ValidationError::for_resource(None, "Lane", "gray", "spec.fallback[0]", "bad");
        assert_eq!(
            e.to_string(),
            "(stored rules) (Lane/gray): spec.fallback[0]: bad"
        );
    }
}
