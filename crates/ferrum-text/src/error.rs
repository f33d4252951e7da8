//! Errors of the text layer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error reported by the `tokenizers` crate while `what` was done.
    #[error("tokenizer: {what}: {message}")]
    Hf { what: String, message: String },
    #[error("tokenizer metadata: key '{0}' is missing")]
    MissingKey(String),
    #[error("tokenizer metadata: key '{key}': {reason}")]
    BadKey { key: String, reason: String },
    #[error("tokenizer model '{model}' is not supported (supported: {supported})")]
    UnknownModel { model: String, supported: String },
    #[error("pre-tokenizer '{pre}' is not supported (supported: {supported})")]
    UnknownPre { pre: String, supported: String },
    #[error("vocabulary: token {token:?} appears twice, at ids {first} and {second}")]
    DuplicateToken {
        token: String,
        first: u32,
        second: u32,
    },
    #[error("vocabulary: {0}")]
    BadVocab(String),
    #[error("token id {id} is out of range (vocabulary has {vocab_size} tokens)")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("{0} is requested but the tokenizer has no such token")]
    MissingSpecial(&'static str),
    #[error(transparent)]
    Gguf(#[from] ferrum_format::gguf::GgufError),
}

impl TextError {
    /// Wraps a `tokenizers` error with what was being done.
    pub(crate) fn hf(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        TextError::Hf {
            what: what.into(),
            message: e.to_string(),
        }
    }
}
