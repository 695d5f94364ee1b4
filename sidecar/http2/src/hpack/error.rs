use std::fmt;

/// Why a header block could not be decoded. Each is a connection error of type
/// `COMPRESSION_ERROR` in HTTP/2 (RFC 9113 §4.3): the two tables are out of step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside a field.
    Truncated,
    /// An integer longer than any this decoder accepts (more than 2^35).
    IntegerTooLarge,
    /// Index 0, which names nothing.
    ZeroIndex,
    /// An index past the static and dynamic tables.
    NoSuchIndex { index: usize, entries: usize },
    /// A Huffman-coded string that is not valid: the EOS symbol inside it, or
    /// padding longer than 7 bits or not made of the EOS code's leading ones.
    Huffman,
    /// A dynamic table size update above the limit this end set.
    TableSizeTooLarge { size: usize, limit: usize },
    /// A dynamic table size update after a field of the same block.
    TableSizeUpdateLate,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("the header block ends inside a field"),
            Error::IntegerTooLarge => f.write_str("an integer in the header block is too large"),
            Error::ZeroIndex => f.write_str("a field refers to index 0"),
            Error::NoSuchIndex { index, entries } => write!(
                f,
                "a field refers to index {index}, past the {entries} entries of the tables"
            ),
            Error::Huffman => f.write_str("a Huffman-coded string is not valid"),
            Error::TableSizeTooLarge { size, limit } => write!(
                f,
                "a dynamic table size update to {size} bytes, above the limit of {limit}"
            ),
            Error::TableSizeUpdateLate => {
                f.write_str("a dynamic table size update after the first field of a block")
            }
        }
    }
}

impl std::error::Error for Error {}
