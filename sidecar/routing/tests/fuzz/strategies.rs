//! Generic generators: arbitrary and special bytes, edits of a valid value, huge
//! inputs, strings from a character set.

use std::ops::Range;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

/// The largest generated input: far above any real header, to show the parsers stay
/// linear (a quadratic one would make the long run time out).
const MAX_INPUT: usize = 64 * 1024;

/// Bytes that mean something to one of the grammars, or to UTF-8.
const SPECIAL: &[u8] = b",;=%-._ \t\r\n\"'\\0aAfFgzZ\x00\x7f\x80\xbf\xc3\xe3\xff";

pub(crate) fn special_byte() -> impl Strategy<Value = u8> {
    prop_oneof![select(SPECIAL), b' '..=b'~', any::<u8>()]
}

pub(crate) fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..128), vec(special_byte(), 0..128)]
}

/// `base` with one to four edits: a byte replaced, inserted or removed, a range
/// doubled, or the end cut off.
pub(crate) fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..5, any::<Index>(), any::<Index>(), special_byte());
    (base, vec(edit, 1..5)).prop_map(|(mut b, edits)| {
        for (kind, at, to, byte) in edits {
            let i = at.index(b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 if i < b.len() => {
                    b.remove(i);
                }
                2 => {
                    let j = i + to.index(b.len() + 1 - i);
                    let copy = b[i..j].to_vec();
                    b.splice(j..j, copy);
                }
                3 => b.truncate(i),
                _ => b.insert(i, byte),
            }
        }
        b
    })
}

/// `unit` repeated up to [`MAX_INPUT`] bytes.
pub(crate) fn huge(unit: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (unit, 1024..=MAX_INPUT)
        .prop_map(|(unit, len)| unit.iter().copied().cycle().take(len).collect())
}

pub(crate) fn huge_text(unit: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (unit, 1024..=MAX_INPUT).prop_map(|(unit, len)| {
        let times = len / unit.len().max(1);
        unit.repeat(times)
    })
}

pub(crate) fn bytes_of(s: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    s.prop_map(String::into_bytes)
}

/// Strings of `len` characters from `set`. (proptest's regex strings do the same but
/// cost more than the checks they feed.)
pub(crate) fn chars_of(set: &'static str, len: Range<usize>) -> impl Strategy<Value = String> {
    let set: Vec<char> = set.chars().collect();
    vec(select(set), len).prop_map(String::from_iter)
}

/// Strings of any characters, biased to the interesting ones.
pub(crate) fn any_chars(len: Range<usize>) -> impl Strategy<Value = String> {
    vec(any::<char>(), len).prop_map(String::from_iter)
}

pub(crate) const PRINTABLE: &str = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
