//! The static table (RFC 7541 Appendix A) and a decoder's dynamic table (§2.3.2).

use std::collections::VecDeque;

use bytes::Bytes;

use super::Error;
use super::decoder::{Field, Made, Memo};

/// The static table: index 1 is `STATIC_TABLE[0]`.
pub const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs in the table besides its bytes (§4.1).
const ENTRY_OVERHEAD: usize = 32;

/// A remembered field.
#[derive(Debug)]
struct Entry {
    /// Name and value in one allocation: one per remembered field, shared by the
    /// values made of it.
    bytes: Bytes,
    /// Where the value starts.
    name: usize,
    /// What the decoder's user made of it, once it was sent by index (see
    /// [`Field::memo`]).
    made: Option<Box<Made>>,
}

/// The fields a peer asked this end to remember, newest first, within `max` bytes
/// as the peer counts them.
#[derive(Debug)]
pub(crate) struct Dynamic {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
}

impl Dynamic {
    pub(crate) fn new(max: usize) -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            max,
        }
    }

    /// The field at `index` in the tables' joint index space (§2.3.3).
    pub(crate) fn get(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        match index {
            0 => Err(Error::ZeroIndex),
            1..=61 => Ok(STATIC_TABLE[index - 1]),
            _ => {
                let entry = self.entries.get(index - 62).ok_or(Error::NoSuchIndex {
                    index,
                    entries: 61 + self.entries.len(),
                })?;
                Ok(entry.bytes.split_at(entry.name))
            }
        }
    }

    /// The field at `index`, sent by its index alone: a dynamic one with its memo.
    pub(crate) fn indexed(&mut self, index: usize) -> Result<Field<'_>, Error> {
        if index < 62 {
            let (name, value) = self.get(index)?;
            return Ok(Field {
                name,
                value,
                sensitive: false,
                memo: None,
            });
        }
        let entries = self.entries.len();
        let Entry { bytes, name, made } =
            self.entries.get_mut(index - 62).ok_or(Error::NoSuchIndex {
                index,
                entries: 61 + entries,
            })?;
        let (name_bytes, value) = bytes.split_at(*name);
        Ok(Field {
            name: name_bytes,
            value,
            sensitive: false,
            memo: Some(Memo {
                made,
                stored: bytes,
                name: *name,
            }),
        })
    }

    /// Remembers a field, evicting the oldest to make room; a field larger than the
    /// whole table empties it and is not kept (§4.4).
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            bytes: Bytes::from(bytes),
            name: name.len(),
            made: None,
        });
        self.size += size;
    }

    /// A size update from the peer (already checked against the limit).
    pub(crate) fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    /// The table's size as the peer counts it (§4.1).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some(entry) = self.entries.pop_back() else {
                break;
            };
            self.size -= entry.bytes.len() + ENTRY_OVERHEAD;
        }
    }
}
