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

/// One step of a field path: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A field or map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// The path as users read it: `spec.default[1].subset`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => push_key(&mut s, k),
            Seg::Index(i) => push_index(&mut s, *i),
        }
    }
    s
}

/// Whether one of `a` and `b` is at or below the other.
pub(crate) fn nested(a: &[Seg], b: &[Seg]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A semantic error as found: where, why, and the other places it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where it is reported.
    pub(crate) path: Vec<Seg>,
    /// What is wrong, for a human.
    pub(crate) reason: String,
    /// Fields besides `path` whose values the check read (e.g. the declared subsets
    /// for "not a declared subset").
    pub(crate) inputs: Vec<Vec<Seg>>,
}

/// Collects semantic errors of one document while walking it, tracking the path.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    path: Vec<Seg>,
    inputs: Vec<Vec<Seg>>,
    errors: Vec<Found>,
}

impl Checker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `name` appended to the current path.
    pub(crate) fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Key(name.to_owned()));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` with `[index]` appended to the current path.
    pub(crate) fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Index(index));
        let r = f(self);
        self.path.pop();
        r
    }

    /// The path of field `name` of the current one, to pass to [`Self::reading`].
    pub(crate) fn path_of(&self, name: &str) -> Vec<Seg> {
        let mut p = self.path.clone();
        p.push(Seg::Key(name.to_owned()));
        p
    }

    /// Runs `f`, noting that the errors it records also depend on the value at `input`
    /// (a path from [`Self::path_of`]), so a reader that dropped that value as
    /// unreadable can tell those errors may be its consequence.
    pub(crate) fn reading<R>(&mut self, input: &[Seg], f: impl FnOnce(&mut Self) -> R) -> R {
        self.inputs.push(input.to_vec());
        let r = f(self);
        self.inputs.pop();
        r
    }

    /// Records an error at the current path.
    pub(crate) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(Found {
            path: self.path.clone(),
            reason: reason.into(),
            inputs: self.inputs.clone(),
        });
    }

    /// Records an error at the current path + `name`.
    pub(crate) fn error_at(&mut self, name: &str, reason: impl Into<String>) {
        self.field(name, |c| c.error(reason));
    }

    /// The collected (path, reason) pairs, in the order found.
    // Reading documents needs the paths as steps (`into_found`); this is the short
    // form for tests of the checks.
    #[cfg(test)]
    pub(crate) fn into_errors(self) -> Vec<(String, String)> {
        self.errors
            .into_iter()
            .map(|f| (render(&f.path), f.reason))
            .collect()
    }

    /// The collected errors with their paths and inputs, in the order found.
    pub(crate) fn into_found(self) -> Vec<Found> {
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
