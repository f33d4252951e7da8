//! `Tokenizer::from_file` (tokenizer.json + tokenizer_config.json): the tiny
//! GGUF-built tokenizers saved as tokenizer.json must load back and encode,
//! decode and report special tokens identically.

mod common;

use std::path::PathBuf;

use ferrum_text::{PieceEncoding, TextError, Tokenizer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ferrum-text-json")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn from_fixture(file: &str) -> Tokenizer {
    let fx = common::fixture_json(file);
    Tokenizer::from_gguf_vocab(&common::vocab_from_json(&fx["vocab"])).unwrap()
}

fn same_on_corpus(a: &Tokenizer, b: &Tokenizer, parse_special: bool) {
    for (name, text) in common::corpus() {
        let ia = a.encode(&text, parse_special, false).unwrap();
        let ib = b.encode(&text, parse_special, false).unwrap();
        assert_eq!(ia, ib, "{name}");
        assert_eq!(
            a.decode(&ia, true).unwrap(),
            b.decode(&ib, true).unwrap(),
            "{name}"
        );
        for &id in &ia {
            assert_eq!(a.token_bytes(id), b.token_bytes(id), "{name} id {id}");
        }
    }
}

#[test]
fn byte_level_tokenizer_json_round_trip() {
    let gguf = from_fixture("bpe_tiny.json");
    let dir = scratch("bpe");
    let path = dir.join("tokenizer.json");
    gguf.hf().save(&path, false).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}, "add_bos_token": true}"#,
    )
    .unwrap();
    let json = Tokenizer::from_file(&path).unwrap();
    assert_eq!(json.piece_encoding(), PieceEncoding::ByteLevel);
    assert_eq!(json.vocab_size(), gguf.vocab_size());
    assert_eq!(json.bos_id(), gguf.bos_id());
    assert_eq!(json.eos_ids(), [gguf.token_to_id("<|eot_id|>").unwrap()]);
    let eot = gguf.token_to_id("<|eot_id|>").unwrap();
    assert!(json.is_special(eot) && !json.is_special(2));
    same_on_corpus(&gguf, &json, true);
    same_on_corpus(&gguf, &json, false);
    // Overrides from config.json / generation_config.json.
    let json = json.with_eos_ids(vec![eot, 5, eot]).with_bos(None);
    assert_eq!(json.eos_ids(), [eot, 5]);
    assert_eq!(json.bos_id(), None);
}

#[test]
fn sentencepiece_tokenizer_json_round_trip() {
    let gguf = from_fixture("spm_tiny.json");
    let dir = scratch("spm");
    let path = dir.join("tokenizer.json");
    gguf.hf().save(&path, true).unwrap();
    let json = Tokenizer::from_file(&path).unwrap();
    assert_eq!(json.piece_encoding(), PieceEncoding::SentencePiece);
    // No tokenizer_config.json: no BOS/EOS known.
    assert_eq!((json.bos_id(), json.eos_ids().len()), (None, 0));
    same_on_corpus(&gguf, &json, false);
}

#[test]
fn tokenizer_json_errors_name_the_file() {
    let dir = scratch("bad");
    let err = Tokenizer::from_file(&dir.join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.json"), "{err}");
    let bad = dir.join("tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err();
    assert!(matches!(err, TextError::Hf { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    // A broken tokenizer_config.json beside a good tokenizer.json.
    let good = from_fixture("bpe_tiny.json");
    good.hf().save(&bad, false).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), "[1,").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
}
