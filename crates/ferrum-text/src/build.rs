//! Builds a `tokenizers::Tokenizer` from a GGUF vocabulary.
//!
//! - "gpt2": byte-level BPE — the file's vocab and merges, the split regexes
//!   selected by `pre`, then the byte-to-char mapping; ByteLevel decoder.
//! - "llama": SentencePiece BPE with byte fallback — merges recovered from the
//!   token scores (a pair merges with the score of the token it forms, best
//!   first), spaces written as `▁` with one prepended to every text segment
//!   (llama.cpp's `add_space_prefix`), `<0xXX>` tokens for bytes.
//!
//! In both, control and unknown-type tokens become special added tokens
//! (split out of the text only when special tokens are parsed) and
//! user-defined tokens become plain added tokens (always split out), as
//! llama.cpp's special-token partition does.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::pretokenize::PreTokenizerSpec;
use crate::vocab::{token_type, GgufVocab};
use crate::TextError;

/// SentencePiece's space marker.
pub(crate) const SPM_SPACE: &str = "\u{2581}";

/// The vocabulary map (spelling → id). Empty spellings get llama.cpp's
/// `[EMPTY_<id>]` placeholder; a spelling used twice is an error.
fn vocab_map(tokens: &[String]) -> Result<Vocab, TextError> {
    let mut seen: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    let mut placeholders = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        // validate() guarantees the count fits u32.
        let id =
            u32::try_from(i).map_err(|_| TextError::BadVocab(format!("id {i} exceeds u32")))?;
        if t.is_empty() {
            placeholders.push((format!("[EMPTY_{id}]"), id));
            continue;
        }
        if let Some(first) = seen.insert(t.as_str(), id) {
            return Err(TextError::DuplicateToken {
                token: t.clone(),
                first,
                second: id,
            });
        }
    }
    let mut vocab: Vocab = seen.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (name, id) in placeholders {
        if let Some(first) = vocab.insert(name.clone(), id) {
            return Err(TextError::DuplicateToken {
                token: name,
                first,
                second: id,
            });
        }
    }
    Ok(vocab)
}

/// Control/unknown tokens as special added tokens, user-defined ones as
/// plain added tokens; both matched on the raw text.
fn add_special_tokens(tok: &mut tokenizers::Tokenizer, v: &GgufVocab) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, t) in v.tokens.iter().enumerate() {
        if t.is_empty() {
            continue;
        }
        match v.effective_type(i) {
            token_type::CONTROL | token_type::UNKNOWN => {
                special.push(AddedToken::from(t.as_str(), true).normalized(false))
            }
            token_type::USER_DEFINED => {
                user.push(AddedToken::from(t.as_str(), false).normalized(false))
            }
            _ => {}
        }
    }
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
}

/// Byte-level BPE ("gpt2").
pub(crate) fn byte_level(
    v: &GgufVocab,
    spec: &PreTokenizerSpec,
) -> Result<tokenizers::Tokenizer, TextError> {
    let vocab = vocab_map(&v.tokens)?;
    let raw = v
        .merges
        .as_ref()
        .ok_or_else(|| TextError::MissingKey("tokenizer.ggml.merges".to_string()))?;
    let mut merges = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        // The separator is the first space after the first char (a piece may
        // not be empty, and byte-level spellings contain no real spaces).
        let first_len = m.chars().next().map_or(0, char::len_utf8);
        let sep = m
            .get(first_len..)
            .and_then(|rest| rest.find(' '))
            .map(|p| p + first_len)
            .ok_or_else(|| TextError::BadKey {
                key: "tokenizer.ggml.merges".to_string(),
                reason: format!("entry {i} ({m:?}) is not \"left right\""),
            })?;
        let (l, r) = (&m[..sep], &m[sep + 1..]);
        // A merge whose pieces or result are not tokens can never produce a
        // token; the `tokenizers` BPE rejects such entries, so they are dropped.
        let merged = format!("{l}{r}");
        if vocab.contains_key(l) && vocab.contains_key(r) && vocab.contains_key(&merged) {
            merges.push((l.to_string(), r.to_string()));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| TextError::hf("building byte-level BPE", e))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let mut pre: Vec<PreTokenizerWrapper> = Vec::with_capacity(spec.regexes.len() + 1);
    for re in &spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TextError::hf(format!("compiling split regex {re}"), e))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    tok.with_pre_tokenizer(Some(PreSequence::new(pre)));
    tok.with_decoder(Some(ByteLevel::default()));
    add_special_tokens(&mut tok, v);
    Ok(tok)
}

/// SentencePiece BPE with byte fallback ("llama").
pub(crate) fn sentencepiece(
    v: &GgufVocab,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer, TextError> {
    let vocab = vocab_map(&v.tokens)?;
    let scores = v
        .scores
        .as_ref()
        .ok_or_else(|| TextError::MissingKey("tokenizer.ggml.scores".to_string()))?;
    let merges = merges_from_scores(&v.tokens, scores, &vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    let unk = v.unknown.or_else(|| {
        (0..v.tokens.len())
            .find(|&i| v.token_type(i) == token_type::UNKNOWN)
            .and_then(|i| u32::try_from(i).ok())
    });
    if let Some(t) = unk.and_then(|u| v.tokens.get(u as usize)) {
        builder = builder.unk_token(t.clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| TextError::hf("building SentencePiece BPE", e))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);

    let space = Replace::new(" ", SPM_SPACE).map_err(|e| TextError::hf("space normalizer", e))?;
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norm.push(Prepend::new(SPM_SPACE.to_string()).into());
    }
    norm.push(space.into());
    tok.with_normalizer(Some(NormalizerSequence::new(norm)));

    let unspace = Replace::new(SPM_SPACE, " ").map_err(|e| TextError::hf("space decoder", e))?;
    let mut dec: Vec<DecoderWrapper> = vec![
        unspace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(dec)));
    add_special_tokens(&mut tok, v);
    Ok(tok)
}

/// Every split of every token into two tokens, ordered best first: by the
/// score of the token the pair forms (higher first), then by that token's id,
/// then longer left piece first.
fn merges_from_scores(tokens: &[String], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    // (score, merged id, left len, left, right)
    let mut cand: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let (Some(&score), Ok(id)) = (scores.get(i), u32::try_from(i)) else {
            continue;
        };
        for (pos, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(pos);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                cand.push((score, id, l.len(), l, r));
            }
        }
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
    cand.into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}
