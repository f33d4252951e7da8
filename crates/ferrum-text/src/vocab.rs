//! The tokenizer description a GGUF file carries in its `tokenizer.ggml.*`
//! metadata, as plain data.

use ferrum_format::gguf::{GgufFile, GgufValue};

use crate::TextError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// A GGUF vocabulary. `tokens[i]` is token id `i`; the optional per-token
/// arrays, when present, have the same length as `tokens`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (byte-level BPE only).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Option<Vec<i32>>,
    pub scores: Option<Vec<f32>>,
    /// `"left right"` pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unknown: Option<u32>,
    pub padding: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece; llama.cpp defaults to true).
    pub add_space_prefix: Option<bool>,
}

/// Token texts llama.cpp treats as end of generation, and as CONTROL even
/// when a file labels them otherwise.
pub const END_OF_GENERATION: [&str; 12] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|return|>",
    "<|call|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// End of generation only when the file already marks them CONTROL. llama.cpp
/// matches these by name alone, which also catches ordinary text tokens (Qwen's
/// vocabulary has a plain `</s>`, the HTML tag); we do not.
const END_OF_GENERATION_IF_CONTROL: [&str; 3] = ["</s>", "<eos>", "<EOT>"];

/// Fill-in-the-middle markers llama.cpp also forces to CONTROL.
const CONTROL_BY_NAME: [&str; 4] = [
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_repo|>",
];

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_MERGES: &str = "tokenizer.ggml.merges";

impl GgufVocab {
    /// Reads the `tokenizer.ggml.*` keys of an open GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TextError> {
        let model = file
            .get(K_MODEL)
            .ok_or_else(|| TextError::MissingKey(K_MODEL.to_string()))?;
        let model = as_string(K_MODEL, model)?;
        let pre = file.get(K_PRE).map(|v| as_string(K_PRE, v)).transpose()?;
        let tokens = file
            .get(K_TOKENS)
            .ok_or_else(|| TextError::MissingKey(K_TOKENS.to_string()))?;
        let tokens = array(K_TOKENS, tokens)?
            .iter()
            .map(|v| as_string(K_TOKENS, v))
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = file
            .get(K_TYPES)
            .map(|v| {
                array(K_TYPES, v)?
                    .iter()
                    .map(|t| as_i32(K_TYPES, t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let scores = file
            .get(K_SCORES)
            .map(|v| {
                array(K_SCORES, v)?
                    .iter()
                    .map(|s| {
                        s.as_f32().ok_or_else(|| {
                            bad(
                                K_SCORES,
                                format!("element is {}, not a number", s.type_name()),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let merges = file
            .get(K_MERGES)
            .map(|v| {
                array(K_MERGES, v)?
                    .iter()
                    .map(|m| as_string(K_MERGES, m))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let id = |name: &str| -> Result<Option<u32>, TextError> {
            let key = format!("tokenizer.ggml.{name}");
            file.get(&key)
                .map(|v| {
                    v.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| bad(&key, describe_non_id(v)))
                })
                .transpose()
        };
        let flag = |name: &str| -> Result<Option<bool>, TextError> {
            let key = format!("tokenizer.ggml.{name}");
            file.get(&key)
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| bad(&key, format!("is {}, not bool", v.type_name())))
                })
                .transpose()
        };
        let vocab = GgufVocab {
            model,
            pre,
            tokens,
            token_types,
            scores,
            merges,
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            eot: id("eot_token_id")?,
            eom: id("eom_token_id")?,
            unknown: id("unknown_token_id")?,
            padding: id("padding_token_id")?,
            add_bos: flag("add_bos_token")?,
            add_eos: flag("add_eos_token")?,
            add_space_prefix: flag("add_space_prefix")?,
        };
        vocab.validate()?;
        Ok(vocab)
    }

    /// Checks lengths and id ranges; called by every constructor that uses it.
    pub fn validate(&self) -> Result<(), TextError> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(TextError::BadVocab(format!("'{K_TOKENS}' is empty")));
        }
        if u32::try_from(n).is_err() {
            return Err(TextError::BadVocab(format!(
                "{n} tokens do not fit u32 ids"
            )));
        }
        if let Some(t) = &self.token_types {
            if t.len() != n {
                return Err(bad(K_TYPES, format!("{} entries for {n} tokens", t.len())));
            }
        }
        if let Some(s) = &self.scores {
            if s.len() != n {
                return Err(bad(K_SCORES, format!("{} entries for {n} tokens", s.len())));
            }
        }
        for (name, id) in [
            ("bos_token_id", self.bos),
            ("eos_token_id", self.eos),
            ("eot_token_id", self.eot),
            ("eom_token_id", self.eom),
            ("unknown_token_id", self.unknown),
            ("padding_token_id", self.padding),
        ] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(bad(
                        &format!("tokenizer.ggml.{name}"),
                        format!("id {id} is out of range for {n} tokens"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Token type of `id` as stored (NORMAL when the file has no type array).
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(token_type::NORMAL)
    }

    /// Token type as llama.cpp uses it: tokens named like an end-of-turn or
    /// fill-in-the-middle marker are CONTROL whatever the file says (llama.cpp
    /// overrides mislabelled ones, e.g. a user-defined `<|im_end|>`).
    pub fn effective_type(&self, id: usize) -> i32 {
        let stored = self.token_type(id);
        let by_name = self.tokens.get(id).is_some_and(|t| {
            CONTROL_BY_NAME.contains(&t.as_str()) || END_OF_GENERATION.contains(&t.as_str())
        });
        if by_name {
            token_type::CONTROL
        } else {
            stored
        }
    }

    /// Ids that end generation, llama.cpp's way: eos, eot and eom from the
    /// metadata first, then every token named like an end-of-generation
    /// marker (including Qwen's FIM pad / repo / file separators), in id order.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = [self.eos, self.eot, self.eom]
            .into_iter()
            .flatten()
            .collect();
        for (i, t) in self.tokens.iter().enumerate() {
            let t = t.as_str();
            let control = self.token_type(i) == token_type::CONTROL;
            if END_OF_GENERATION.contains(&t)
                || (control && END_OF_GENERATION_IF_CONTROL.contains(&t))
            {
                ids.extend(u32::try_from(i).ok());
            }
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        ids
    }
}

fn bad(key: &str, reason: String) -> TextError {
    TextError::BadKey {
        key: key.to_string(),
        reason,
    }
}

fn as_string(key: &str, v: &GgufValue) -> Result<String, TextError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(key, format!("is {}, not string", v.type_name())))
}

fn as_i32(key: &str, v: &GgufValue) -> Result<i32, TextError> {
    v.as_i64()
        .and_then(|x| i32::try_from(x).ok())
        .ok_or_else(|| bad(key, format!("element {} is not an i32", describe(v))))
}

fn array<'a>(key: &str, v: &'a GgufValue) -> Result<&'a [GgufValue], TextError> {
    v.as_array()
        .ok_or_else(|| bad(key, format!("is {}, not array", v.type_name())))
}

/// A short description of a value for error messages (never a whole array).
fn describe(v: &GgufValue) -> String {
    match v.as_i64() {
        Some(x) => x.to_string(),
        None => format!("of type {}", v.type_name()),
    }
}

fn describe_non_id(v: &GgufValue) -> String {
    format!("value {} is not a u32 token id", describe(v))
}
