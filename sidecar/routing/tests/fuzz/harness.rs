//! The runner every target shares: corpus replay, fixed inputs, then `cases()`
//! generated ones, with a failing input saved for the corpus.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use graylane_routing::stable_hash;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, TestCaseResult, TestError, TestRunner,
};

/// Generated cases per target when `GRAYLANE_FUZZ_CASES` is not set: enough to catch
/// a regression in a normal test run, small enough to keep it quick.
pub(crate) const DEFAULT_CASES: u32 = 256;

fn cases() -> u32 {
    match std::env::var("GRAYLANE_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GRAYLANE_FUZZ_CASES={v:?} is not a number")),
        Err(_) => DEFAULT_CASES,
    }
}

/// A target whose input is one header value: replays its corpus, then every one-byte
/// substitution and insertion of each of `seeds` (the near-misses that random draws
/// find slowly), then generated inputs.
pub(crate) fn fuzz_bytes(
    target: &str,
    seeds: &[&[u8]],
    strategy: impl Strategy<Value = Vec<u8>>,
    check: fn(&[u8]) -> TestCaseResult,
) {
    let mut edits = Vec::new();
    for seed in seeds {
        for at in 0..=seed.len() {
            for byte in 0..=u8::MAX {
                edits.push([&seed[..at], &[byte], &seed[at..]].concat());
                if at < seed.len() {
                    edits.push([&seed[..at], &[byte], &seed[at + 1..]].concat());
                }
            }
        }
    }
    fuzz(
        target,
        &edits,
        strategy,
        <[u8]>::to_vec,
        |b| Some(b.clone()),
        |b: &Vec<u8>| check(b),
    );
}

/// Runs `check` on every corpus file of `target`, then on each of `fixed`, then on
/// `cases()` inputs drawn from `strategy`. `from_corpus` turns a file's bytes into an
/// input; `to_corpus` gives the bytes to save when a generated input fails (`None`
/// when it has no raw form).
pub(crate) fn fuzz<S: Strategy>(
    target: &str,
    fixed: &[S::Value],
    strategy: S,
    from_corpus: fn(&[u8]) -> S::Value,
    to_corpus: fn(&S::Value) -> Option<Vec<u8>>,
    check: impl Fn(&S::Value) -> TestCaseResult,
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in &files {
        let input = from_corpus(&std::fs::read(file).unwrap());
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("corpus {}: {e}", file.display()),
            Err(_) => panic!("corpus {}: panicked (above)", file.display()),
        }
    }
    for input in fixed {
        if let Err(e) = check(input) {
            fail(target, &e, input, to_corpus);
        }
    }

    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz.txt"
        )))),
        ..Config::default()
    });
    match runner.run(&strategy, |input| check(&input)) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => fail(target, &why, &input, to_corpus),
        Err(TestError::Abort(why)) => panic!("{target}: aborted: {why}"),
    }
}

/// Reports a failing input, saved as a file when it has a raw form.
fn fail<T: fmt::Debug>(
    target: &str,
    why: &dyn fmt::Display,
    input: &T,
    to_corpus: fn(&T) -> Option<Vec<u8>>,
) -> ! {
    let Some(bytes) = to_corpus(input) else {
        panic!("{target}: {why}\ninput: {input:?}");
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-artifacts")
        .join(target);
    let file = dir.join(format!("{:016x}", stable_hash(&bytes)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    panic!(
        "{target}: {why}\ninput: b\"{}\"\nsaved as {}: copy it into tests/corpus/{target}/",
        bytes.escape_ascii(),
        file.display()
    );
}

/// Bytes as the `&str` the parsers take. The sidecar hands them `HeaderValue::to_str`
/// output (visible ASCII) but the functions accept any string; replacing bad UTF-8
/// (rather than dropping the input) keeps the rest of the bytes in play.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
