//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B).
//!
//! The code is canonical, so the tables here are computed at compile time from the
//! code lengths alone. Decoding looks the next 8 bits up in a 256-entry table,
//! which covers every code up to 8 bits long (letters, digits and the common
//! punctuation of header values); a longer code is found by comparing the next bits
//! against each longer length's range of codes, which is what canonical codes allow.

// Bits are taken from the accumulator by shifting and masking: the truncating
// casts are the point, and every table index fits its type (checked at compile time).
#![allow(clippy::cast_possible_truncation)]

use super::Error;
use super::lengths::LENGTHS;

/// The end-of-string symbol: never valid inside a string.
const EOS: u16 = 256;
/// The longest code, in bits.
const LONGEST: usize = 30;

/// Each symbol's code, right-aligned in `LENGTHS[symbol]` bits.
pub(crate) const CODES: [u32; 257] = codes();
/// The symbols in code order: by length, then by symbol.
const SORTED: [u16; 257] = sorted();
/// For each length, its first code, how many codes have it, and where its symbols
/// start in `SORTED`.
const RANGES: [(u32, u32, u16); LONGEST + 1] = ranges();
/// For each value of the next 8 bits: the symbol whose code they start with and that
/// code's length (`length << 9 | symbol`), or 0 when the code is longer than 8 bits.
const SHORT: [u16; 256] = short();

/// Decodes a Huffman-coded string, appending it to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
    // The next bits, left-aligned; `bits` of them are input, the rest zero.
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut rest = src;
    // The shortest code is 5 bits: room for the longest string `src` can hold, so
    // the pushes below never reallocate.
    dst.reserve(src.len() * 8 / 5 + 1);
    loop {
        while bits <= 56 {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            acc |= u64::from(byte) << (56 - bits);
            bits += 8;
            rest = tail;
        }
        if bits == 0 {
            return Ok(());
        }
        let (symbol, length) = next(acc);
        if length > bits {
            // The end of the input. What is left must be padding: fewer than 8 bits,
            // all ones (the EOS code's start).
            let ones = (1u64 << bits) - 1;
            return if bits < 8 && acc >> (64 - bits) == ones {
                Ok(())
            } else {
                Err(Error::Huffman)
            };
        }
        let Ok(byte) = u8::try_from(symbol) else {
            // EOS: a string never contains it.
            return Err(Error::Huffman);
        };
        dst.push(byte);
        acc <<= length;
        bits -= length;
    }
}

/// The symbol whose code starts `acc` (left-aligned), and the code's length.
fn next(acc: u64) -> (u16, usize) {
    let short = SHORT[usize::from((acc >> 56) as u8)];
    if short != 0 {
        return (short & 0x1ff, usize::from(short >> 9));
    }
    for (length, &(first, count, start)) in RANGES.iter().enumerate().skip(9) {
        let code = (acc >> (64 - length)) as u32;
        if code.wrapping_sub(first) < count {
            return (SORTED[usize::from(start) + (code - first) as usize], length);
        }
    }
    // Every 30-bit value is some code's start (the code is complete), and the
    // 30-bit ones are all symbols: never reached.
    (EOS, LONGEST)
}

/// Appends the Huffman coding of `src` to `dst`, padded with ones to a whole byte.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    for &byte in src {
        acc = (acc << LENGTHS[usize::from(byte)]) | u64::from(CODES[usize::from(byte)]);
        bits += usize::from(LENGTHS[usize::from(byte)]);
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        dst.push(((acc << (8 - bits)) | (0xff >> bits)) as u8);
    }
}

/// The length in bytes of `src` Huffman-coded.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

const fn sorted() -> [u16; 257] {
    let mut sorted = [0u16; 257];
    let mut n = 0;
    let mut length = 1;
    while length <= LONGEST {
        let mut symbol = 0;
        while symbol < 257 {
            if LENGTHS[symbol] as usize == length {
                sorted[n] = symbol as u16;
                n += 1;
            }
            symbol += 1;
        }
        length += 1;
    }
    sorted
}

const fn ranges() -> [(u32, u32, u16); LONGEST + 1] {
    let mut ranges = [(0u32, 0u32, 0u16); LONGEST + 1];
    let mut code: u32 = 0;
    let mut start: u16 = 0;
    let mut length = 1;
    while length <= LONGEST {
        let mut count = 0;
        let mut symbol = 0;
        while symbol < 257 {
            if LENGTHS[symbol] as usize == length {
                count += 1;
            }
            symbol += 1;
        }
        ranges[length] = (code, count, start);
        code = (code + count) << 1;
        start += count as u16;
        length += 1;
    }
    ranges
}

const fn codes() -> [u32; 257] {
    let ranges = ranges();
    let sorted = sorted();
    let mut codes = [0u32; 257];
    let mut length = 1;
    while length <= LONGEST {
        let (first, count, start) = ranges[length];
        let mut i = 0;
        while i < count {
            codes[sorted[start as usize + i as usize] as usize] = first + i;
            i += 1;
        }
        length += 1;
    }
    codes
}

const fn short() -> [u16; 256] {
    let codes = codes();
    let mut short = [0u16; 256];
    let mut symbol = 0;
    while symbol < 257 {
        let length = LENGTHS[symbol] as usize;
        if length <= 8 {
            let base = (codes[symbol] as usize) << (8 - length);
            let mut i = 0;
            while i < 1 << (8 - length) {
                short[base + i] = ((length as u16) << 9) | symbol as u16;
                i += 1;
            }
        }
        symbol += 1;
    }
    short
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 7541 Appendix B's codes for a few symbols, short and long, and EOS.
    #[test]
    fn the_computed_codes_are_the_rfcs() {
        for (symbol, code, length) in [
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b' ' as usize, 0x14, 6),
            (b':' as usize, 0x5c, 7),
            (b'&' as usize, 0xf8, 8),
            (b'<' as usize, 0x7ffc, 15),
            (0, 0x1ff8, 13),
            (10, 0x3ffffffc, 30),
            (255, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ] {
            assert_eq!((CODES[symbol], LENGTHS[symbol]), (code, length), "{symbol}");
        }
    }

    #[test]
    fn every_byte_string_comes_back_as_it_went() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..2_000 {
            let len = rng.usize(0..(n % 64 + 1));
            let src: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut coded = Vec::new();
            encode(&src, &mut coded);
            assert_eq!(coded.len(), encoded_len(&src));
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, src);
        }
    }

    #[test]
    fn padding_must_be_short_and_all_ones() {
        // "a" is 00011: padded with 111 it is valid, with 000 or 101 it is not.
        let mut out = Vec::new();
        decode(&[0b0001_1111], &mut out).unwrap();
        assert_eq!(out, b"a");
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(Error::Huffman));
        assert_eq!(decode(&[0b0001_1101], &mut out), Err(Error::Huffman));
        // A whole byte of ones is padding longer than 7 bits.
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(Error::Huffman));
        // The EOS code itself, padded.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(Error::Huffman)
        );
    }
}
