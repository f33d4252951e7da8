//! The default model's GGUF-built tokenizer against Hugging Face `tokenizers`
//! (transformers' own GGUF conversion) on the committed multilingual corpus,
//! and decode(encode(s)) == s.

mod common;

/// Compares every corpus entry; reports all mismatches at once.
#[test]
fn corpus_ids_match_hf() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let goldens = common::golden_entries("corpus_goldens.json");
    let mut failures = Vec::new();
    let corpus = common::corpus();
    assert!(corpus.len() >= 60, "corpus has {} entries", corpus.len());
    for (name, text) in &corpus {
        let g = goldens.get(name).unwrap_or_else(|| {
            panic!("no golden for {name}: rerun tools/gen_tokenizer_goldens.py")
        });
        for (key, parse_special) in [("ids", true), ("ids_plain", false)] {
            let want = common::ids(&g[key]);
            let got = tok.encode(text, parse_special, false).unwrap();
            if got != want {
                failures.push(format!(
                    "{name} ({key}): {text:?}\n  want {want:?}\n  got  {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_round_trips() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    for (name, text) in common::corpus() {
        for parse_special in [true, false] {
            let ids = tok.encode(&text, parse_special, false).unwrap();
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                text,
                "{name} parse_special={parse_special}"
            );
            // The streaming path: concatenated token bytes are the text's bytes.
            let bytes: Vec<u8> = ids
                .iter()
                .flat_map(|&id| tok.token_bytes(id).unwrap())
                .collect();
            assert_eq!(bytes, text.as_bytes(), "{name} token_bytes");
        }
    }
}

#[test]
fn decode_skips_special_tokens_on_request() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let text = "<|im_start|>user\nhi<|im_end|>\n";
    let ids = tok.encode(text, true, false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi\n");
    // A cut multi-byte char decodes to U+FFFD, never an error.
    let rare = tok.encode("\u{10FFFF}", false, false).unwrap();
    assert!(rare.len() > 1, "{rare:?}");
    assert_eq!(tok.decode(&rare[..1], false).unwrap(), "\u{FFFD}");
    assert!(tok.decode(&[], false).unwrap().is_empty());
}
