//! Small vocabularies trained by tools/gen_tokenizer_goldens.py:
//! a SentencePiece BPE ("llama") checked against the `sentencepiece`
//! library, and a byte-level BPE with Llama 3's pre-tokenizer ("llama-bpe",
//! ignore_merges) checked against HF `tokenizers` — and both against
//! llama.cpp's own ids for the same vocabularies (`llamacpp` in each entry,
//! both with and without special-token parsing).

mod common;

use ferrum_text::{PieceEncoding, Tokenizer};

/// Checks every corpus entry except those named in `skip`.
fn check(file: &str, parse_special: bool, skip: &[&str]) -> Tokenizer {
    let fx = common::fixture_json(file);
    let vocab = common::vocab_from_json(&fx["vocab"]);
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap_or_else(|e| panic!("{file}: {e}"));
    let goldens = common::golden_entries(file);
    let mut failures = Vec::new();
    for (name, text) in common::corpus() {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let want = common::ids(&goldens[&name]["ids"]);
        let got = tok.encode(&text, parse_special, false).unwrap();
        if got != want {
            failures.push(format!("{name}: {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let mut checked = 0;
    for (name, text) in common::corpus() {
        let Some(l) = goldens[&name].get("llamacpp") else {
            continue;
        };
        for (key, parse) in [("ids", true), ("ids_plain", false)] {
            let want = common::ids(&l[key]);
            let got = tok.encode(&text, parse, false).unwrap();
            if got != want {
                failures.push(format!(
                    "{name} (llama.cpp {key}): {text:?}\n  want {want:?}\n  got  {got:?}"
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * goldens.len(),
        "{file}: llama.cpp ids missing: rerun the tool with --llama-tokenize"
    );
    assert!(
        failures.is_empty(),
        "{file}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    tok
}

#[test]
fn sentencepiece_matches_reference() {
    // sentencepiece never parses control pieces out of text. It adds its
    // dummy prefix once per text, while llama.cpp (and HF's GGUF conversion)
    // add one to every text segment that follows an added token such as the
    // user-defined `<|im_start|>`; and llama.cpp treats a token named
    // `<|im_end|>` as a control token whatever its type. We follow llama.cpp
    // (whose ids `check` compares for every entry), so the two corpus
    // entries with such tokens are left out of the sentencepiece comparison.
    let tok = check(
        "spm_tiny.json",
        false,
        &["special_tokens", "special_adjacent"],
    );
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let after = tok.encode("system\nhi", false, false).unwrap();
    let mut want = vec![im_start];
    want.extend(&after);
    assert_eq!(
        tok.encode("<|im_start|>system\nhi", false, false).unwrap(),
        want
    );
    assert_eq!(tok.piece_encoding(), PieceEncoding::SentencePiece);
    assert_eq!(tok.bos_id(), Some(1));
    // add_bos: llama.cpp's SentencePiece default.
    assert_eq!(tok.encode("hi", false, true).unwrap()[0], 1);
    // Round trip: the prefix space is added on encode and stripped on decode.
    // (After an added token the segment's prefix space stays in the decoded
    // text, as in llama.cpp and HF, so that entry is left out.)
    for (name, text) in common::corpus() {
        if name == "special_tokens" {
            continue;
        }
        let ids = tok.encode(&text, false, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| tok.token_bytes(id).unwrap())
            .collect();
        let mut want = b" ".to_vec();
        want.extend_from_slice(text.as_bytes());
        if !text.is_empty() {
            assert_eq!(bytes, want, "{name} token_bytes");
        }
    }
}

#[test]
fn byte_level_llama3_matches_reference() {
    let tok = check("bpe_tiny.json", true, &[]);
    assert_eq!(tok.piece_encoding(), PieceEncoding::ByteLevel);
    // llama-bpe: BOS added by default.
    let bos = tok.bos_id().unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.encode("hi", true, true).unwrap()[0], bos);
    for (name, text) in common::corpus() {
        let ids = tok.encode(&text, true, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
    }
}
