//! Models: typed configuration, strict weight loading (one name map per
//! format) and the one generic decoder.

pub mod batch;
pub mod config;
pub mod convert;
pub mod decoder;
pub mod error;
pub mod kv;
pub mod load;
pub mod source;
pub mod weights;

pub use batch::{ForwardBatch, LogitRows, Logits, Picks, SeqInput};
pub use config::{Ffn, ModelConfig, RopeConfig, RopeScaling};
pub use decoder::{Model, Tracer};
pub use error::{ModelError, Result};
pub use kv::{KvCache, BLOCK_SIZE};
