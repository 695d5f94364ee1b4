//! Reading header blocks (RFC 7541 §6).

use bytes::Bytes;

use super::table::Dynamic;
use super::{DEFAULT_TABLE_SIZE, Error, STATIC_TABLE, huffman};

/// Integers above this are refused: no table, string or size a peer may send comes
/// near it, and bounding it keeps the shifts in range.
const MAX_INTEGER_SHIFT: u32 = 28;

/// One field of a header block, borrowed for the duration of the callback.
#[derive(Debug)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Sent as "never indexed" (§6.2.3): a proxy passing it on must not let it into
    /// a compression table either.
    pub sensitive: bool,
    /// A field sent by its index in the dynamic table: that entry's memo. A peer
    /// sends most fields of a steady stream of requests that way, and the same
    /// bytes each time: what the decoder's user made of them once (checked, the
    /// name looked up, the value validated) it can take again from here.
    pub memo: Option<Memo<'a>>,
}

/// What the decoder's user made of a field: its name and value as a head holds them.
pub type Made = (http::HeaderName, http::HeaderValue);

/// A dynamic-table entry's memo (see [`Field::memo`]). Dropped with the entry.
#[derive(Debug)]
pub struct Memo<'a> {
    /// Empty until the user fills it.
    pub made: &'a mut Option<Box<Made>>,
    pub(super) stored: &'a Bytes,
    pub(super) name: usize,
}

impl Memo<'_> {
    /// The field's value as the table holds it, shared, not copied: what a value
    /// kept in the memo is made of, so that it pins no other buffer.
    pub fn value(&self) -> Bytes {
        self.stored.slice(self.name..)
    }
}

/// One direction of a connection's header compression: the dynamic table the peer
/// fills, and scratch space for Huffman-coded strings (kept across blocks, so a
/// connection's steady state allocates nothing for them).
#[derive(Debug)]
pub struct Decoder {
    table: Dynamic,
    /// The largest table size the peer may ask for: this end's
    /// `SETTINGS_HEADER_TABLE_SIZE`.
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    /// A decoder whose peer may use a table of up to `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: Dynamic::new(limit),
            limit,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Lets go of the Huffman scratch (an idle connection's, `Connection::let_go`).
    pub(crate) fn let_go(&mut self) {
        self.name = Vec::new();
        self.value = Vec::new();
    }

    /// The dynamic table's size as the peer counts it.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Decodes a whole header block (the HEADERS frame's fragment and its
    /// CONTINUATIONs, joined), handing each field to `each` in order.
    ///
    /// An error leaves the decoder out of step with its peer: the connection must
    /// end (HTTP/2's `COMPRESSION_ERROR`). Fields handed out before it were valid.
    pub fn decode(&mut self, block: &[u8], mut each: impl FnMut(Field<'_>)) -> Result<(), Error> {
        let mut rest = block;
        let mut fields = false;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(&mut rest, 7)?;
                each(self.table.indexed(index)?);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the block's first
                // field (§4.2).
                if fields {
                    return Err(Error::TableSizeUpdateLate);
                }
                let size = integer(&mut rest, 5)?;
                if size > self.limit {
                    return Err(Error::TableSizeTooLarge {
                        size,
                        limit: self.limit,
                    });
                }
                self.table.resize(size);
                continue;
            } else {
                // A literal (§6.2): with incremental indexing (01), without (0000), or
                // never indexed (0001).
                let indexing = first & 0x40 != 0;
                let index = integer(&mut rest, if indexing { 6 } else { 4 })?;
                if indexing {
                    let name = match index {
                        0 => string(&mut rest, &mut self.name)?,
                        1..=61 => STATIC_TABLE[index - 1].0,
                        // The table's own name, copied out: the insert below may
                        // evict the entry it came from.
                        _ => {
                            let name = self.table.get(index)?.0;
                            self.name.clear();
                            self.name.extend_from_slice(name);
                            &self.name
                        }
                    };
                    let value = string(&mut rest, &mut self.value)?;
                    each(Field {
                        name,
                        value,
                        sensitive: false,
                        memo: None,
                    });
                    self.table.insert(name, value);
                } else {
                    let name = match index {
                        0 => string(&mut rest, &mut self.name)?,
                        _ => self.table.get(index)?.0,
                    };
                    let value = string(&mut rest, &mut self.value)?;
                    each(Field {
                        name,
                        value,
                        sensitive: first & 0x10 != 0,
                        memo: None,
                    });
                }
            }
            fields = true;
        }
        Ok(())
    }
}

/// Reads an integer with an `prefix`-bit prefix (§5.1).
fn integer(rest: &mut &[u8], prefix: u32) -> Result<usize, Error> {
    let (&first, mut tail) = rest.split_first().ok_or(Error::Truncated)?;
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&byte, next) = tail.split_first().ok_or(Error::Truncated)?;
            tail = next;
            if shift > MAX_INTEGER_SHIFT {
                return Err(Error::IntegerTooLarge);
            }
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
    }
    *rest = tail;
    Ok(value)
}

/// Reads a string literal (§5.2): borrowed from the block, or Huffman-decoded into
/// `scratch`.
fn string<'o, 'b: 'o>(rest: &mut &'b [u8], scratch: &'o mut Vec<u8>) -> Result<&'o [u8], Error> {
    let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(rest, 7)?;
    if len > rest.len() {
        return Err(Error::Truncated);
    }
    let (raw, tail) = rest.split_at(len);
    *rest = tail;
    if !huffman {
        return Ok(raw);
    }
    scratch.clear();
    huffman::decode(raw, scratch)?;
    Ok(scratch)
}
