//! Reading one part of a document (`metadata` or `spec`) past its errors.
//!
//! serde stops at the first field it cannot read. To report every error, the reader
//! drops that value (a mapping key, or one list element) from a working copy and reads
//! again, until the rest reads well or nothing more can be done. Paths are reported as
//! written: dropping `sourceCidrs[0]` does not make the next bad entry `[0]` too.
//!
//! Which errors are reported once something was dropped (each rule keeps out errors
//! that only restate or follow from an earlier one):
//! - an error at, below or above a dropped value is its consequence: a matcher left
//!   empty once its bad `regex` is dropped, a list or label map emptied by a drop;
//! - a required field is then missing: not reported, and a stand-in is put in its place
//!   (see [`stand_ins`]) so the rest of its struct is still read and checked. A field
//!   missing as written is reported, and stood in for the same way;
//! - a required field missing from a struct that also had an unknown field is taken to
//!   be that field misspelt (`selectr`): only the unknown field is reported;
//! - semantic errors of the partly read resource follow the first rule, applied to
//!   their own path and to every other value the check read ([`Checker::reading`]):
//!   `"v2" is not a declared subset` is kept out when a subset was dropped, `percent
//!   120 is outside 0-100` is kept when only the rule's tag was.
//!
//! [`Checker::reading`]: crate::path::Checker::reading

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::value_de::{DeError, from_value};
use crate::path::{Found, Seg, nested, render};

/// Most readings of one document, stand-in trials included; each finds at most one
/// error.
const MAX_READS: usize = 100;
/// Fewest readings of one document, however big.
const MIN_READS: usize = 10;
/// Values (mapping entries, list elements, scalars) all readings of one document may
/// walk together. A reading can walk the whole document, so without this a 1 MiB
/// document with its errors at the end would cost 100 full readings.
const READ_BUDGET: usize = 1_000_000;

/// What was dropped from or put into a document to read past its errors, kept in the
/// document's own paths (`spec.rules[2].tag`, list indices as written).
#[derive(Debug)]
pub(crate) struct Edits {
    /// Values dropped or stood in for, and the parts replaced by placeholders.
    changed: Vec<Vec<Seg>>,
    /// Structs that had an unknown field.
    misspelt: Vec<Vec<Seg>>,
    /// For each list that lost elements: the written indices of the ones left.
    kept: HashMap<Vec<Seg>, Vec<usize>>,
    reads_left: usize,
    stopped: bool,
}

impl Edits {
    /// No edits yet, with a reading budget fit for the size of `document`.
    pub(crate) fn new(document: &Value) -> Self {
        Self {
            changed: Vec::new(),
            misspelt: Vec::new(),
            kept: HashMap::new(),
            reads_left: (READ_BUDGET / count_values(document)).clamp(MIN_READS, MAX_READS),
            stopped: false,
        }
    }

    /// Reads `value`, the document's field `root`, as a `T`. Adds each error found to
    /// `errors` (no pair twice), in reading order; `None` when no `T` could be read
    /// even after dropping the bad parts.
    pub(crate) fn read<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        root: &str,
        errors: &mut Vec<(String, String)>,
    ) -> Option<T> {
        let mut work = value.clone();
        let mut result = self.try_read(&work, root, errors)?;
        loop {
            let e = match result {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let original = self.original(e.path());
            if !self.explains(&original, e.is_missing()) {
                push_once(errors, render(&original), e.reason().to_owned());
            }
            result = if e.is_missing() {
                self.changed.push(original);
                self.stand_in(&mut work, e.path(), root, errors)?
            } else {
                if e.is_unknown_field()
                    && let Some((_, parent)) = original.split_last()
                {
                    self.misspelt.push(parent.to_vec());
                }
                self.drop_value(&mut work, e.path())?;
                self.try_read(&work, root, errors)?
            };
        }
    }

    /// Notes that the whole part `root` was replaced by a placeholder.
    pub(crate) fn replaced(&mut self, root: &str) {
        self.changed.push(vec![Seg::Key(root.to_owned())]);
    }

    /// Adds the semantic errors in `found` that do not follow from an edit (see the
    /// module comment), with their paths as written.
    pub(crate) fn add_independent(&self, found: Vec<Found>, errors: &mut Vec<(String, String)>) {
        // A set, not `push_once`: a big document can have thousands of semantic errors.
        let mut seen: HashSet<(String, String)> = errors.iter().cloned().collect();
        for f in found {
            let path = self.original(&f.path);
            let follows =
                self.touches(&path) || f.inputs.iter().any(|i| self.touches(&self.original(i)));
            let e = (render(&path), f.reason);
            if !follows && seen.insert(e.clone()) {
                errors.push(e);
            }
        }
    }

    fn try_read<T: DeserializeOwned>(
        &mut self,
        work: &Value,
        root: &str,
        errors: &mut Vec<(String, String)>,
    ) -> Option<Result<T, DeError>> {
        if self.reads_left == 0 {
            // Said once, where the reading stopped; a later part is not read at all.
            if !self.stopped {
                self.stopped = true;
                push_once(
                    errors,
                    root.to_owned(),
                    "too many errors to read on; fix these and check again".to_owned(),
                );
            }
            return None;
        }
        self.reads_left -= 1;
        Some(from_value(work, root))
    }

    /// Fills the missing field at `path` with the first stand-in that reads well there
    /// and returns that reading; drops the struct holding it when none does.
    fn stand_in<T: DeserializeOwned>(
        &mut self,
        work: &mut Value,
        path: &[Seg],
        root: &str,
        errors: &mut Vec<(String, String)>,
    ) -> Option<Result<T, DeError>> {
        let (Seg::Key(field), parent) = path.split_last()? else {
            return None;
        };
        for candidate in stand_ins() {
            let Value::Object(map) = value_at(work, below_root(parent))? else {
                return None;
            };
            map.insert(field.clone(), candidate);
            let result = self.try_read(work, root, errors)?;
            match &result {
                Err(e) if e.path().starts_with(path) => {}
                _ => return Some(result),
            }
        }
        self.drop_value(work, parent)?;
        self.try_read(work, root, errors)
    }

    /// Drops the value at `path` (which starts with the root) from `work`; `None` when
    /// there is nothing to drop (the root itself, or a path that is not there).
    fn drop_value(&mut self, work: &mut Value, path: &[Seg]) -> Option<()> {
        let original = self.original(path);
        let (last, parent) = path.split_last().filter(|(_, p)| !p.is_empty())?;
        let list = self.original(parent);
        match (last, value_at(work, below_root(parent))?) {
            (Seg::Key(k), Value::Object(map)) => {
                map.remove(k)?;
            }
            (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
                let len = items.len();
                let kept = self.kept.entry(list).or_insert_with(|| (0..len).collect());
                if *i < kept.len() {
                    kept.remove(*i);
                }
                items.remove(*i);
            }
            _ => return None,
        }
        self.changed.push(original);
        Some(())
    }

    /// `path` in the working copy (or the resource read from it) as written in the
    /// document: list indices shifted by drops are mapped back.
    fn original(&self, path: &[Seg]) -> Vec<Seg> {
        let mut out = Vec::with_capacity(path.len());
        for seg in path {
            let seg = match seg {
                Seg::Index(i) => Seg::Index(
                    self.kept
                        .get(&out)
                        .and_then(|k| k.get(*i).copied())
                        .unwrap_or(*i),
                ),
                key @ Seg::Key(_) => key.clone(),
            };
            out.push(seg);
        }
        out
    }

    /// Whether `path` (as written) is at, below or above an edited value.
    fn touches(&self, path: &[Seg]) -> bool {
        self.changed.iter().any(|c| nested(c, path))
    }

    /// Whether the error at `path` (as written) follows from an earlier edit.
    fn explains(&self, path: &[Seg], missing: bool) -> bool {
        self.touches(path)
            || (missing
                && path
                    .split_last()
                    .is_some_and(|(_, parent)| self.misspelt.iter().any(|m| m == parent)))
    }
}

/// Stand-ins tried in order for a missing required field. Between them they fit every
/// required field of the model: names, tags and other strings (`invalid`), durations
/// (`1s`), numbers, structs and label maps, lists. Errors at or about a stand-in are
/// never reported, so its value only has to read well.
fn stand_ins() -> [Value; 5] {
    [
        json!("invalid"),
        json!("1s"),
        json!(0),
        json!({}),
        json!([]),
    ]
}

/// How many values `v` holds, itself included (1 at least).
fn count_values(v: &Value) -> usize {
    // A stack, not recursion: nesting depth is the document's choice.
    let mut stack = vec![v];
    let mut n = 0;
    while let Some(v) = stack.pop() {
        n += 1;
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    n
}

/// `path` without its first step, the root the part was read from.
fn below_root(path: &[Seg]) -> &[Seg] {
    path.get(1..).unwrap_or_default()
}

fn value_at<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Object(map)) => map.get_mut(k),
        (Seg::Index(i), Value::Array(items)) => items.get_mut(*i),
        _ => None,
    })
}

/// Adds an error unless it is already there (only used for the few errors of reading,
/// at most one per reading).
fn push_once(errors: &mut Vec<(String, String)>, path: String, reason: String) {
    let e = (path, reason);
    if !errors.contains(&e) {
        errors.push(e);
    }
}
