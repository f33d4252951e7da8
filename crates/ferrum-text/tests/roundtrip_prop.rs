//! Property: for arbitrary text, encoding never fails, ids are in range, and
//! decode(encode(s)) == s — on the tiny trained byte-level BPE and
//! SentencePiece vocabularies (committed fixtures, no model needed).

mod common;

use std::sync::OnceLock;

use ferrum_text::Tokenizer;
use proptest::prelude::*;

fn tiny(file: &str) -> Tokenizer {
    let fx = common::fixture_json(file);
    Tokenizer::from_gguf_vocab(&common::vocab_from_json(&fx["vocab"])).unwrap()
}

fn bpe() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| tiny("bpe_tiny.json"))
}

fn spm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| tiny("spm_tiny.json"))
}

/// Arbitrary strings, biased towards whitespace, digits, apostrophes and
/// multi-byte characters where tokenizers have their edge cases.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        "[ \t\r\n]{1,6}",
        "[0-9]{1,12}",
        "'[sStTdDmM]|'[lL][lL]|'re|'ve",
        "[a-zA-Z]{1,8}",
        "[\u{300}-\u{36f}\u{4e00}-\u{4e20}\u{1f600}-\u{1f610}\u{fffd}]{1,4}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn check(tok: &Tokenizer, s: &str, prefix_space: bool) -> Result<(), TestCaseError> {
    let ids = tok
        .encode(s, false, false)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    let back = tok
        .decode(&ids, false)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, s);
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| tok.token_bytes(id).unwrap_or_default())
        .collect();
    let mut want = Vec::new();
    if prefix_space && !s.is_empty() {
        want.push(b' ');
    }
    want.extend_from_slice(s.as_bytes());
    prop_assert_eq!(bytes, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn byte_level_round_trip(s in text()) {
        check(bpe(), &s, false)?;
    }

    #[test]
    fn sentencepiece_round_trip(s in text()) {
        check(spm(), &s, true)?;
    }
}
