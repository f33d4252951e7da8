//! The streaming detokenizer on the default model's tokenizer: for every
//! corpus text, the pieces emitted token by token concatenate to the one-shot
//! decode, no piece holds a broken character, and special tokens are hidden.
//! Also the tiny SentencePiece vocabulary (prefix-space handling, byte pieces).

mod common;

use ferrum_text::{Detokenizer, Tokenizer};

fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> (Vec<String>, String) {
    let mut d = Detokenizer::new(tok, skip_special);
    let pieces: Vec<String> = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
    (pieces, d.finish())
}

fn check_corpus(tok: &Tokenizer, parse_special: bool) -> usize {
    let mut held_back = 0;
    let mut failures = Vec::new();
    for (name, text) in common::corpus() {
        let ids = tok.encode(&text, parse_special, false).unwrap();
        for skip in [true, false] {
            let (pieces, tail) = stream(tok, &ids, skip);
            let joined = pieces.concat() + &tail;
            let want = tok.decode(&ids, skip).unwrap();
            if joined != want {
                failures.push(format!(
                    "{name} (skip_special={skip}): stream {joined:?}\n  decode {want:?}"
                ));
            }
            // A piece never ends in a replacement character the one-shot
            // decode does not have (a cut character shown early).
            if !want.contains('\u{FFFD}') && pieces.iter().any(|p| p.contains('\u{FFFD}')) {
                failures.push(format!("{name}: a piece shows U+FFFD: {pieces:?}"));
            }
            held_back += pieces.iter().filter(|p| p.is_empty()).count();
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    held_back
}

#[test]
fn corpus_stream_equals_one_shot_decode() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let held = check_corpus(tok, true);
    check_corpus(tok, false);
    // The corpus has CJK and emoji whose bytes span tokens: some pieces wait.
    assert!(
        held > 0,
        "no token was held back; the corpus should split characters"
    );
}

#[test]
fn split_emoji_and_cjk_are_held_until_complete() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let mut checked = 0;
    for text in ["🦀🦀 ferris", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "龘靐齉", "👩‍👩‍👧‍👦 family", "ÆØÅ 𓀀𓀁"]
    {
        let ids = tok.encode(text, false, false).unwrap();
        let mut d = Detokenizer::new(tok, true);
        let mut out = String::new();
        for &id in &ids {
            let piece = d.push(tok, id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{text:?}: {piece:?}");
            if piece.is_empty() && d.pending_bytes() > 0 {
                checked += 1;
            }
            out.push_str(&piece);
        }
        out.push_str(&d.finish());
        assert_eq!(out, text);
    }
    assert!(checked > 0, "no character was split across tokens");
}

#[test]
fn special_tokens_are_hidden_or_shown() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let text = "<|im_start|>user\nhi 日本<|im_end|>\n<|im_start|>assistant\n";
    let ids = tok.encode(text, true, false).unwrap();
    let (pieces, tail) = stream(tok, &ids, true);
    assert_eq!(pieces.concat() + &tail, "user\nhi 日本\nassistant\n");
    let (pieces, tail) = stream(tok, &ids, false);
    assert_eq!(pieces.concat() + &tail, text);
}

#[test]
fn invalid_utf8_at_the_end_becomes_replacement() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    // The first token of a rare character alone is an incomplete character.
    let ids = ["𓀀", "龘", "𝔘"]
        .iter()
        .map(|t| tok.encode(t, false, false).unwrap())
        .find(|ids| ids.len() > 1)
        .expect("one of these characters spans tokens");
    let (pieces, tail) = stream(tok, &ids[..1], true);
    assert_eq!(pieces.concat(), "");
    assert_eq!(tail, tok.decode(&ids[..1], true).unwrap());
    assert_eq!(tail, "\u{FFFD}");
}

#[test]
fn sentencepiece_prefix_space_and_byte_pieces() {
    let fx = common::fixture_json("spm_tiny.json");
    let tok = Tokenizer::from_gguf_vocab(&common::vocab_from_json(&fx["vocab"])).unwrap();
    let mut failures = Vec::new();
    for (name, text) in common::corpus() {
        let ids = tok.encode(&text, false, false).unwrap();
        for skip in [true, false] {
            let (pieces, tail) = stream(&tok, &ids, skip);
            let joined = pieces.concat() + &tail;
            let want = tok.decode(&ids, skip).unwrap();
            if joined != want {
                failures.push(format!("{name} (skip={skip}): {joined:?} vs {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
