//! Field paths as users read them: `spec.default[1].subset`.

/// Appends a field or map key to `path`: `a.b`, or `a["x.y"]` when the key holds
/// characters that would make the path ambiguous (dots, brackets, quotes, spaces).
pub(crate) fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        // serde_json's string form is a correct, escaped double-quoted literal.
        path.push_str(&serde_json::Value::from(key).to_string());
        path.push(']');
    }
}

/// Appends a list index to `path`: `a[3]`.
pub(crate) fn push_index(path: &mut String, index: usize) {
    path.push('[');
    path.push_str(&index.to_string());
    path.push(']');
}

/// `parent` + key, as a new string.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let mut p = parent.to_owned();
    push_key(&mut p, key);
    p
}

/// `parent` + index, as a new string.
pub(crate) fn join_index(parent: &str, index: usize) -> String {
    let mut p = parent.to_owned();
    push_index(&mut p, index);
    p
}

/// Quotes a user-supplied value for an error message, cut to a readable length so a
/// 1 MiB string cannot flood a terminal.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        return format!("{value:?}");
    }
    let cut: String = value.chars().take(MAX).collect();
    format!("{cut:?}…")
}

/// Collects semantic errors of one document while walking it, tracking the path.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    path: String,
    errors: Vec<(String, String)>,
}

impl Checker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `name` appended to the current path.
    pub(crate) fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        push_key(&mut self.path, name);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `[index]` appended to the current path.
    pub(crate) fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        push_index(&mut self.path, index);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Records an error at the current path.
    pub(crate) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push((self.path.clone(), reason.into()));
    }

    /// Records an error at the current path + `name`.
    pub(crate) fn error_at(&mut self, name: &str, reason: impl Into<String>) {
        self.field(name, |c| c.error(reason));
    }

    /// The collected (path, reason) pairs, in the order found.
    pub(crate) fn into_errors(self) -> Vec<(String, String)> {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dots_are_bracketed() {
        assert_eq!(
            join_key("spec.selector", "app.kubernetes.io/name"),
            "spec.selector[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(
            join_key("spec.headers", "x-user-group"),
            "spec.headers.x-user-group"
        );
        assert_eq!(join_key("", "spec"), "spec");
        assert_eq!(join_index("spec.default", 1), "spec.default[1]");
    }

    #[test]
    fn checker_tracks_nested_paths() {
        let mut c = Checker::new();
        c.field("spec", |c| {
            c.field("default", |c| c.index(1, |c| c.error_at("subset", "bad")));
            c.error("top");
        });
        assert_eq!(
            c.into_errors(),
            vec![
                ("spec.default[1].subset".to_owned(), "bad".to_owned()),
                ("spec".to_owned(), "top".to_owned())
            ]
        );
    }

    #[test]
    fn long_values_are_cut_when_quoted() {
        let q = quote(&"a".repeat(1000));
        assert!(q.len() < 100);
        assert_eq!(quote("x\ny"), "\"x\\ny\"");
    }
}
