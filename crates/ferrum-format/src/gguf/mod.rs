//! GGUF v2/v3: a validating reader over a memory map (or owned bytes) and a
//! streaming v3 writer.
//!
//! The reader checks everything before handing anything out: magic, version,
//! counts against the bytes left, UTF-8, value and tensor type ids, array
//! nesting, duplicate keys and tensor names, tensor shapes (1..=4 dims,
//! overflow-free element counts, whole quantization blocks per row), and that
//! every tensor's aligned byte range lies inside the file. Malformed input
//! yields a [`GgufError`] naming the offset, key or tensor; it never panics.

mod cursor;
mod error;
mod file;
mod reader;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use file::GgufFile;
pub use reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_METADATA_VALUES};
pub use tensor::{GgufTensorInfo, MAX_DIMS};
pub use value::GgufValue;
pub use writer::{
    write_file, GgufTensorData, GgufTensorSink, GgufWriter, MAX_TENSOR_NAME, WRITE_VERSION,
};
