//! Writing header blocks: the static table only, strings as they are.
//!
//! Without a dynamic table the encoder keeps no state, so a block can be written
//! from anywhere, in any order of streams, and the peer's
//! `SETTINGS_HEADER_TABLE_SIZE` (even 0) never matters: no size update is ever due.

use super::STATIC_TABLE;

/// Appends one field to a header block. A `sensitive` field goes as "never indexed"
/// (§6.2.3), so the next hop keeps it out of its tables too.
pub fn encode_field(name: &[u8], value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
    let flag = if sensitive { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(index) => {
            if !sensitive && let Some(whole) = static_field(index, name, value) {
                // Indexed field (§6.1).
                integer(whole, 7, 0x80, dst);
                return;
            }
            // Literal without indexing, indexed name (§6.2.2).
            integer(index, 4, flag, dst);
        }
        None => {
            // Literal without indexing, new name.
            dst.push(flag);
            string(name, dst);
        }
    }
    string(value, dst);
}

/// The longest name in the static table (`access-control-allow-origin`).
const LONGEST_NAME: usize = 27;
/// The most static names of one length (13: `accept-ranges`, `authorization`, ...).
const MOST_OF_ONE_LENGTH: usize = 6;
/// For each name length, the first index of each static name that long (0: none):
/// a name is compared with at most six others of its length.
const BY_LENGTH: [[u8; MOST_OF_ONE_LENGTH]; LONGEST_NAME + 1] = by_length();

/// The static table's first index with this name.
fn static_name(name: &[u8]) -> Option<usize> {
    let candidates = BY_LENGTH.get(name.len())?;
    candidates
        .iter()
        .take_while(|&&i| i != 0)
        .map(|&i| usize::from(i))
        .find(|&i| STATIC_TABLE[i - 1].0 == name)
}

#[allow(clippy::cast_possible_truncation)] // indices up to 61, checked below
const fn by_length() -> [[u8; MOST_OF_ONE_LENGTH]; LONGEST_NAME + 1] {
    let mut table = [[0u8; MOST_OF_ONE_LENGTH]; LONGEST_NAME + 1];
    let mut i = 0;
    while i < STATIC_TABLE.len() {
        let name = STATIC_TABLE[i].0;
        // Only a name's first entry: the others follow it (`static_field`).
        if i == 0 || !same(STATIC_TABLE[i - 1].0, name) {
            let slot = &mut table[name.len()];
            let mut k = 0;
            while slot[k] != 0 {
                k += 1;
            }
            slot[k] = (i + 1) as u8;
        }
        i += 1;
    }
    table
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The index of a static entry with both this name and value, the entries of one
/// name being consecutive from `first`.
fn static_field(first: usize, name: &[u8], value: &[u8]) -> Option<usize> {
    STATIC_TABLE[first - 1..]
        .iter()
        .take_while(|(n, _)| *n == name)
        .position(|(_, v)| !v.is_empty() && *v == value)
        .map(|i| first + i)
}

/// Writes an integer with a `prefix`-bit prefix after the `flags` bits (§5.1).
fn integer(value: usize, prefix: u32, flags: u8, dst: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.push(flags | low_byte(value));
        return;
    }
    dst.push(flags | low_byte(max));
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.push(0x80 | low_byte(rest & 0x7f));
        rest >>= 7;
    }
    dst.push(low_byte(rest));
}

/// A string literal, not Huffman-coded (§5.2).
fn string(bytes: &[u8], dst: &mut Vec<u8>) {
    integer(bytes.len(), 7, 0x00, dst);
    dst.extend_from_slice(bytes);
}

fn low_byte(value: usize) -> u8 {
    value.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_name_is_found_at_its_first_index_and_no_other_name_is() {
        for (i, (name, _)) in STATIC_TABLE.iter().enumerate() {
            let first = STATIC_TABLE.iter().position(|(n, _)| n == name);
            assert_eq!(static_name(name), first.map(|f| f + 1), "{i}");
        }
        for name in [
            &b""[..],
            b"te",
            b"gray-publish",
            b"content-typ",
            b"x",
            &[b'a'; 40],
        ] {
            assert_eq!(static_name(name), None);
        }
    }
}
