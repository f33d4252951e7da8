//! Text handling: tokenizers built from `tokenizer.json` or from GGUF
//! vocabulary metadata (byte-level BPE and SentencePiece BPE), checked
//! token-for-token against llama.cpp and Hugging Face `tokenizers`.

mod build;
pub mod bytelevel;
pub mod chat;
mod error;
pub mod pretokenize;
mod tokenizer;
pub mod vocab;

pub use error::TextError;
pub use tokenizer::{PieceEncoding, Tokenizer};
pub use vocab::{token_type, GgufVocab};
