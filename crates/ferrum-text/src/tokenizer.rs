//! [`Tokenizer`]: one type for tokenizers built from `tokenizer.json` and
//! from GGUF vocabulary metadata, with the model's special-token facts.

use std::path::Path;
use std::sync::OnceLock;

use ferrum_format::gguf::GgufFile;

use crate::build::{self, SPM_SPACE};
use crate::pretokenize;
use crate::vocab::{token_type, GgufVocab};
use crate::{bytelevel, TextError};

/// How a token's vocabulary spelling maps to the bytes it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceEncoding {
    /// GPT-2 byte-level alphabet (`Ġ` = space).
    ByteLevel,
    /// SentencePiece: `▁` = space, `<0xXX>` = one raw byte.
    SentencePiece,
    /// The spelling is the text (WordPiece and others).
    Plain,
}

/// A tokenizer plus the special-token facts generation needs.
///
/// Encoding: `parse_special` splits special (control) tokens such as
/// `<|im_start|>` out of the text; when false they are tokenized as plain
/// text. Non-special added (user-defined) tokens are always split out, as in
/// llama.cpp and Hugging Face. `add_special` adds BOS/EOS as the model's
/// metadata says (GGUF: `add_bos_token`/`add_eos_token` with llama.cpp's
/// defaults; tokenizer.json: its post-processor).
///
/// Special tokens (GGUF) are the CONTROL and UNKNOWN types, plus tokens that
/// llama.cpp forces to CONTROL by name (`<|im_end|>`, `<|endoftext|>`, FIM
/// markers, ...); [`Self::eos_ids`] is llama.cpp's end-of-generation set
/// (see [`GgufVocab::end_of_generation_ids`]).
///
/// Decoding performs no clean-up of spaces before punctuation, so
/// `decode(encode(s)) == s` for every text with byte-level vocabularies, and
/// for every text without added tokens with SentencePiece ones (there the
/// prefix space put after an added token stays in the decoded text).
pub struct Tokenizer {
    /// Splits special tokens out of the text.
    hf: tokenizers::Tokenizer,
    /// A clone that leaves special tokens in the text, made on first use.
    hf_plain: OnceLock<tokenizers::Tokenizer>,
    pieces: PieceEncoding,
    vocab_size: usize,
    /// Sorted ids of special tokens.
    special: Vec<u32>,
    bos: Option<u32>,
    /// The id `add_eos_token` appends.
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    /// tokenizer.json: `add_special` means "run the post-processor".
    use_post_processor: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("pieces", &self.pieces)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS come from a
    /// `tokenizer_config.json` beside it when present (`bos_token`,
    /// `eos_token`); override them with [`Self::with_eos_ids`] /
    /// [`Self::with_bos`] from config.json or generation_config.json.
    pub fn from_file(tokenizer_json: &Path) -> Result<Self, TextError> {
        let hf = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| TextError::hf(format!("loading {}", tokenizer_json.display()), e))?;
        let added = hf.get_added_tokens_decoder();
        let mut special: Vec<u32> = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        special.sort_unstable();
        let vocab_size = hf
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let pieces = piece_encoding_of(&hf);
        let mut tok = Tokenizer {
            hf,
            hf_plain: OnceLock::new(),
            pieces,
            vocab_size,
            special,
            bos: None,
            eos: None,
            eos_ids: Vec::new(),
            add_bos: false,
            add_eos: false,
            use_post_processor: true,
        };
        if let Some(dir) = tokenizer_json.parent() {
            let cfg = dir.join("tokenizer_config.json");
            if cfg.is_file() {
                tok.apply_tokenizer_config(&cfg)?;
            }
        }
        Ok(tok)
    }

    /// Reads `bos_token` / `eos_token` (a string or `{"content": ...}`).
    fn apply_tokenizer_config(&mut self, path: &Path) -> Result<(), TextError> {
        let text = std::fs::read_to_string(path).map_err(|source| TextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TextError::BadKey {
            key: path.display().to_string(),
            reason: format!("invalid JSON: {e}"),
        })?;
        let token_of = |key: &str| -> Option<u32> {
            let t = v.get(key)?;
            let content = t
                .as_str()
                .or_else(|| t.get("content").and_then(|c| c.as_str()))?;
            self.hf.token_to_id(content)
        };
        self.bos = token_of("bos_token");
        self.eos = token_of("eos_token");
        self.eos_ids = self.eos.into_iter().collect();
        self.add_bos = v
            .get("add_bos_token")
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        self.add_eos = v
            .get("add_eos_token")
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        Ok(())
    }

    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TextError> {
        Self::from_gguf_vocab(&GgufVocab::from_gguf(file)?)
    }

    /// Builds the tokenizer from GGUF vocabulary data.
    ///
    /// An unknown `pre` is an error listing the supported names (llama.cpp
    /// refuses such files too); an absent `pre` selects llama.cpp's default
    /// split.
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self, TextError> {
        v.validate()?;
        let (hf, pieces, add_bos_default) = match v.model.as_str() {
            "gpt2" => {
                let spec = pretokenize::spec_for(v.pre.as_deref()).ok_or_else(|| {
                    TextError::UnknownPre {
                        pre: v.pre.clone().unwrap_or_default(),
                        supported: pretokenize::supported_names(),
                    }
                })?;
                (
                    build::byte_level(v, &spec)?,
                    PieceEncoding::ByteLevel,
                    spec.add_bos_default,
                )
            }
            "llama" => {
                let prefix = v.add_space_prefix.unwrap_or(true);
                (
                    build::sentencepiece(v, prefix)?,
                    PieceEncoding::SentencePiece,
                    true,
                )
            }
            other => {
                return Err(TextError::UnknownModel {
                    model: other.to_string(),
                    supported: "gpt2, llama".to_string(),
                })
            }
        };
        let add_bos = v.add_bos.unwrap_or(add_bos_default);
        let add_eos = v.add_eos.unwrap_or(false);
        if add_bos && v.bos.is_none() {
            return Err(TextError::MissingSpecial("BOS (add_bos_token is true)"));
        }
        if add_eos && v.eos.is_none() {
            return Err(TextError::MissingSpecial("EOS (add_eos_token is true)"));
        }
        let special: Vec<u32> = (0..v.tokens.len())
            .filter(|&i| {
                matches!(
                    v.effective_type(i),
                    token_type::CONTROL | token_type::UNKNOWN
                )
            })
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        let eos_ids = v.end_of_generation_ids();
        Ok(Tokenizer {
            hf,
            hf_plain: OnceLock::new(),
            pieces,
            vocab_size: v.tokens.len(),
            special,
            bos: v.bos,
            eos: v.eos,
            eos_ids,
            add_bos,
            add_eos,
            use_post_processor: false,
        })
    }

    /// Replaces the BOS id (e.g. from config.json).
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// Replaces the end-of-generation ids (e.g. generation_config.json's list).
    pub fn with_eos_ids(mut self, ids: Vec<u32>) -> Self {
        self.eos_ids = ids;
        dedup_keep_order(&mut self.eos_ids);
        self
    }

    pub fn encode(
        &self,
        text: &str,
        parse_special: bool,
        add_special: bool,
    ) -> Result<Vec<u32>, TextError> {
        let hf = if parse_special {
            &self.hf
        } else {
            self.plain()
        };
        let with_pp = add_special && self.use_post_processor;
        let enc = hf
            .encode_fast(text, with_pp)
            .map_err(|e| TextError::hf("encoding", e))?;
        let body = enc.get_ids();
        if !add_special || self.use_post_processor {
            return Ok(body.to_vec());
        }
        let mut ids = Vec::with_capacity(body.len() + 2);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(body);
        if self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The tokenizer that leaves special tokens in the text.
    fn plain(&self) -> &tokenizers::Tokenizer {
        self.hf_plain.get_or_init(|| {
            let mut t = self.hf.clone();
            t.set_encode_special_tokens(true);
            t
        })
    }

    /// Decodes ids to text; invalid UTF-8 (e.g. a cut multi-byte char)
    /// becomes U+FFFD. Special tokens are dropped when `skip_special`.
    /// SentencePiece: the prefix space of the first piece is removed; the
    /// prefix space encoding put after an added token stays (as in llama.cpp
    /// and Hugging Face).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TextError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TextError::TokenOutOfRange {
                id,
                vocab_size: self.vocab_size,
            });
        }
        self.hf
            .decode(ids, skip_special)
            .map_err(|e| TextError::hf("decoding", e))
    }

    /// The raw bytes one token stands for, with no space stripping; special
    /// and added tokens give their text. `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let spelling = self.hf.id_to_token(id)?;
        if self.is_special(id) {
            return Some(spelling.into_bytes());
        }
        Some(match self.pieces {
            PieceEncoding::ByteLevel => {
                bytelevel::decode_token(&spelling).unwrap_or_else(|| spelling.into_bytes())
            }
            PieceEncoding::SentencePiece => match spm_byte(&spelling) {
                Some(b) => vec![b],
                None => spelling.replace(SPM_SPACE, " ").into_bytes(),
            },
            PieceEncoding::Plain => spelling.into_bytes(),
        })
    }

    /// The vocabulary spelling of a token.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.hf.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.hf.token_to_id(token)
    }

    /// Number of token ids (the model's embedding rows for GGUF files).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-generation ids, the primary EOS first.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Control/unknown (GGUF) or special added (tokenizer.json) tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.binary_search(&id).is_ok()
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn piece_encoding(&self) -> PieceEncoding {
        self.pieces
    }

    /// The underlying `tokenizers` tokenizer (special tokens parsed).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.hf
    }
}

/// `<0xAB>` → 0xAB.
fn spm_byte(spelling: &str) -> Option<u8> {
    let hex = spelling.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn dedup_keep_order(ids: &mut Vec<u32>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
}

/// Classifies a tokenizer.json by its decoder.
fn piece_encoding_of(hf: &tokenizers::Tokenizer) -> PieceEncoding {
    let Some(dec) = hf.get_decoder() else {
        return PieceEncoding::Plain;
    };
    let json = serde_json::to_string(dec).unwrap_or_default();
    if json.contains("\"ByteLevel\"") {
        PieceEncoding::ByteLevel
    } else if json.contains("\"ByteFallback\"")
        || json.contains("\"Metaspace\"")
        || json.contains(SPM_SPACE)
    {
        PieceEncoding::SentencePiece
    } else {
        PieceEncoding::Plain
    }
}
