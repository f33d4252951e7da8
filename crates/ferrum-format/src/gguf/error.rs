//! Everything that can go wrong reading or writing a GGUF file. Every message
//! names the offending key or tensor, the byte offset where it was found (for
//! the reader) and the numbers involved.

use std::path::PathBuf;

use ferrum_core::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("GGUF write failed: {0}")]
    Write(#[source] std::io::Error),

    #[error("not a GGUF file: magic bytes are {found:02x?} (\"{}\"), expected \"GGUF\"", found.escape_ascii())]
    BadMagic { found: [u8; 4] },

    #[error(
        "unsupported GGUF version {version}{}; only versions 2 and 3 are supported",
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 { " (a big-endian file?)" } else { "" }
    )]
    UnsupportedVersion { version: u32 },

    #[error(
        "file truncated at byte {offset}: {what} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },

    #[error("key-value count {count} at byte 16 is impossible: the {remaining} bytes left hold at most {max}")]
    KvCountTooLarge {
        count: u64,
        remaining: u64,
        max: u64,
    },

    #[error("tensor count {count} at byte 8 is impossible: the {remaining} bytes left hold at most {max}")]
    TensorCountTooLarge {
        count: u64,
        remaining: u64,
        max: u64,
    },

    #[error("{what} at byte {offset} has length {len} but only {remaining} bytes remain")]
    StringTooLong {
        offset: u64,
        what: String,
        len: u64,
        remaining: u64,
    },

    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: u64, what: String },

    #[error("key '{key}' at byte {offset}: unknown value type id {id}")]
    UnknownValueType { offset: u64, key: String, id: u32 },

    #[error("key '{key}' at byte {offset}: bool byte is {byte}, expected 0 or 1")]
    InvalidBool { offset: u64, key: String, byte: u8 },

    #[error(
        "key '{key}' at byte {offset}: array of {elem_type} has length {len}, \
         but the {remaining} bytes left hold at most {max}"
    )]
    ArrayTooLong {
        offset: u64,
        key: String,
        elem_type: &'static str,
        len: u64,
        remaining: u64,
        max: u64,
    },

    #[error("key '{key}' at byte {offset}: arrays nested {depth} deep (at most {max} allowed)")]
    ArrayTooDeep {
        offset: u64,
        key: String,
        depth: usize,
        max: usize,
    },

    #[error("metadata holds more than {limit} values in total (at key '{key}', byte {offset})")]
    MetadataTooLarge {
        offset: u64,
        key: String,
        limit: u64,
    },

    #[error("duplicate metadata key '{key}' at byte {offset}")]
    DuplicateKey { offset: u64, key: String },

    #[error("general.alignment is {value}; it must be a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error("metadata key '{key}' = {value} does not fit in {target}")]
    ValueOutOfRange {
        key: String,
        value: u64,
        target: &'static str,
    },

    #[error("tensor '{tensor}' has {n_dims} dimensions (1 to 4 allowed)")]
    BadDimCount { tensor: String, n_dims: u32 },

    #[error("tensor '{tensor}' at byte {offset}: unknown or unsupported GGML type id {id}")]
    UnknownTensorType {
        offset: u64,
        tensor: String,
        id: u32,
    },

    #[error("tensor '{tensor}': element count of dims {dims:?} overflows")]
    ElementCountOverflow { tensor: String, dims: Vec<u64> },

    #[error(
        "tensor '{tensor}': row length ne0 = {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    NotBlockMultiple {
        tensor: String,
        ne0: u64,
        ty: GgmlType,
        block_size: u64,
    },

    #[error("duplicate tensor name '{tensor}' at byte {offset}")]
    DuplicateTensor { offset: u64, tensor: String },

    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor '{tensor}': data bytes {start}..{end} (offset {offset}, {size} bytes) \
         lie outside the {file_len}-byte file"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error("metadata key '{key}' was already added")]
    KeyAlreadyAdded { key: String },

    #[error("tensor '{tensor}' was already added")]
    TensorAlreadyAdded { tensor: String },

    #[error("tensor name '{tensor}' is {len} bytes; llama.cpp allows at most {max}")]
    TensorNameTooLong {
        tensor: String,
        len: usize,
        max: usize,
    },

    #[error("tensor '{tensor}' has a zero dimension in {dims:?}; llama.cpp cannot load it")]
    ZeroDim { tensor: String, dims: Vec<u64> },

    #[error("metadata key '{key}' cannot be written: {reason}")]
    InvalidValue { key: String, reason: String },

    #[error("tensor '{tensor}': expected {expected} bytes of data, got {got}")]
    TensorSizeMismatch {
        tensor: String,
        expected: u64,
        got: u64,
    },

    #[error("tensor data out of order: expected '{expected}' next, got '{got}'")]
    TensorOrder { expected: String, got: String },

    #[error(
        "{written} of {declared} declared tensors were written before finish ('{next}' is next)"
    )]
    MissingTensorData {
        written: usize,
        declared: usize,
        next: String,
    },
}
