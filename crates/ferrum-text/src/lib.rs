//! Text handling: tokenizers built from `tokenizer.json` or from GGUF
//! vocabulary metadata (byte-level BPE and SentencePiece BPE), checked
//! token-for-token against llama.cpp and Hugging Face `tokenizers`.

mod build;
pub mod bytelevel;
pub mod chat;
pub mod detok;
mod error;
pub mod pretokenize;
pub mod stops;
mod tojson;
mod tokenizer;
pub mod vocab;

pub use chat::{ChatError, ChatOptions, ChatTemplate};
pub use detok::Detokenizer;
pub use error::TextError;
pub use stops::{StopMatcher, StopOutcome};
pub use tokenizer::{PieceEncoding, Tokenizer};
pub use vocab::{token_type, GgufVocab};
