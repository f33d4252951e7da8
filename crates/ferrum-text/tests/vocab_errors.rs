//! GgufVocab → Tokenizer on small hand-made vocabularies: the BPE mechanics,
//! and every malformed input yielding an error that names the problem.

use ferrum_format::gguf::{write_file, GgufFile, GgufValue};
use ferrum_text::bytelevel::encode_bytes;
use ferrum_text::{token_type, GgufVocab, TextError, Tokenizer};

/// 256 byte tokens, merges building "hello" and " world", two control tokens.
fn byte_vocab() -> GgufVocab {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| encode_bytes(&[b])).collect();
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|end|>".to_string());
    tokens.push("<|start|>".to_string());
    let n = tokens.len();
    let mut types = vec![token_type::NORMAL; n];
    types[n - 2] = token_type::CONTROL;
    types[n - 1] = token_type::CONTROL;
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges.iter().map(|s| s.to_string()).collect()),
        bos: Some(n as u32 - 1),
        eos: Some(n as u32 - 2),
        ..Default::default()
    }
}

fn id_of(v: &GgufVocab, t: &str) -> u32 {
    v.tokens.iter().position(|x| x == t).unwrap() as u32
}

#[test]
fn byte_level_bpe_mechanics() {
    let v = byte_vocab();
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert_eq!(tok.vocab_size(), v.tokens.len());
    let ids = tok.encode("hello world", true, false).unwrap();
    assert_eq!(ids, [id_of(&v, "hello"), id_of(&v, "Ġworld")]);
    // Bytes without merges stay single byte tokens.
    let ids = tok.encode("é", true, false).unwrap();
    assert_eq!(
        ids,
        [
            id_of(&v, &encode_bytes(&[0xC3])),
            id_of(&v, &encode_bytes(&[0xA9]))
        ]
    );
    // Special tokens, add_special (qwen2 pre: no BOS by default).
    let end = id_of(&v, "<|end|>");
    assert_eq!(
        tok.encode("hello<|end|>", true, true).unwrap(),
        [id_of(&v, "hello"), end]
    );
    assert_eq!(tok.eos_ids(), [end]);
    assert!(tok.is_special(end) && !tok.is_special(0));
    assert_eq!(
        tok.decode(&[id_of(&v, "hello"), end], true).unwrap(),
        "hello"
    );
    assert_eq!(
        tok.decode(&[id_of(&v, "hello"), end], false).unwrap(),
        "hello<|end|>"
    );
    let err = tok.decode(&[v.tokens.len() as u32], false).unwrap_err();
    assert!(matches!(err, TextError::TokenOutOfRange { .. }), "{err}");
}

#[test]
fn add_bos_and_eos_follow_metadata() {
    let mut v = byte_vocab();
    v.add_bos = Some(true);
    v.add_eos = Some(true);
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    let ids = tok.encode("hello", true, true).unwrap();
    assert_eq!(
        ids,
        [
            id_of(&v, "<|start|>"),
            id_of(&v, "hello"),
            id_of(&v, "<|end|>")
        ]
    );
    assert_eq!(
        tok.encode("hello", true, false).unwrap(),
        [id_of(&v, "hello")]
    );
    // llama-bpe adds BOS when the key is absent.
    let mut v = byte_vocab();
    v.pre = Some("llama-bpe".into());
    assert!(Tokenizer::from_gguf_vocab(&v).unwrap().add_bos());
}

#[test]
fn every_supported_pre_builds() {
    for pre in [
        None,
        Some("default"),
        Some("gpt-2"),
        Some("qwen2"),
        Some("deepseek-r1-qwen"),
        Some("llama-bpe"),
        Some("llama3"),
    ] {
        let mut v = byte_vocab();
        v.pre = pre.map(str::to_string);
        let tok = Tokenizer::from_gguf_vocab(&v).unwrap_or_else(|e| panic!("{pre:?}: {e}"));
        let text = "hello world 12345 it's <|end|>\r\n\t";
        let ids = tok.encode(text, true, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre:?}");
    }
}

fn err_of(v: &GgufVocab) -> String {
    Tokenizer::from_gguf_vocab(v).unwrap_err().to_string()
}

#[test]
fn malformed_vocabularies_are_named_errors() {
    let mut v = byte_vocab();
    v.model = "bert".into();
    let msg = err_of(&v);
    assert!(
        msg.contains("'bert'") && msg.contains("gpt2, llama"),
        "{msg}"
    );

    let mut v = byte_vocab();
    v.pre = Some("mystery".into());
    let msg = err_of(&v);
    assert!(
        msg.contains("'mystery'") && msg.contains("qwen2") && msg.contains("llama-bpe"),
        "{msg}"
    );

    let mut v = byte_vocab();
    v.merges = None;
    assert!(err_of(&v).contains("tokenizer.ggml.merges"));

    let mut v = byte_vocab();
    v.merges.as_mut().unwrap().push("nospace".into());
    let msg = err_of(&v);
    assert!(
        msg.contains("tokenizer.ggml.merges") && msg.contains("nospace"),
        "{msg}"
    );

    let mut v = byte_vocab();
    v.tokens[263] = "hello".into();
    let msg = err_of(&v);
    assert!(msg.contains("\"hello\"") && msg.contains("twice"), "{msg}");

    let mut v = byte_vocab();
    v.token_types.as_mut().unwrap().pop();
    let msg = err_of(&v);
    assert!(
        msg.contains("tokenizer.ggml.token_type") && msg.contains("entries"),
        "{msg}"
    );

    let mut v = byte_vocab();
    v.eos = Some(100_000);
    let msg = err_of(&v);
    assert!(
        msg.contains("eos_token_id") && msg.contains("100000"),
        "{msg}"
    );

    let mut v = byte_vocab();
    v.bos = None;
    v.add_bos = Some(true);
    assert!(err_of(&v).contains("BOS"));

    let mut v = byte_vocab();
    v.tokens.clear();
    v.token_types = None;
    v.bos = None;
    v.eos = None;
    assert!(err_of(&v).contains("empty"));

    let mut v = byte_vocab();
    v.model = "llama".into();
    assert!(err_of(&v).contains("tokenizer.ggml.scores"));

    let mut v = byte_vocab();
    v.scores = Some(vec![0.0; 3]);
    assert!(err_of(&v).contains("tokenizer.ggml.scores"));
}

#[test]
fn empty_token_strings_get_placeholders() {
    let mut v = byte_vocab();
    v.tokens.push(String::new());
    v.tokens.push(String::new());
    v.token_types
        .as_mut()
        .unwrap()
        .extend([token_type::UNUSED, token_type::UNUSED]);
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert_eq!(tok.vocab_size(), v.tokens.len());
    assert_eq!(
        tok.encode("hello", true, false).unwrap(),
        [id_of(&v, "hello")]
    );
}

/// A GGUF file holding only tokenizer metadata.
fn gguf_with(meta: Vec<(String, GgufValue)>, name: &str) -> GgufFile {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferrum-text-gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    write_file(&path, &meta, &[]).unwrap();
    GgufFile::open(&path).unwrap()
}

fn meta_of(v: &GgufVocab) -> Vec<(String, GgufValue)> {
    let strs =
        |xs: &[String]| GgufValue::Array(xs.iter().map(|s| GgufValue::String(s.clone())).collect());
    let mut m = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("qwen2".into()),
        ),
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String(v.model.clone()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::String(v.pre.clone().unwrap()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strs(&v.tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(
                v.token_types
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|&t| GgufValue::I32(t))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            strs(v.merges.as_ref().unwrap()),
        ),
        (
            "tokenizer.ggml.bos_token_id".to_string(),
            GgufValue::U32(v.bos.unwrap()),
        ),
        (
            "tokenizer.ggml.eos_token_id".to_string(),
            GgufValue::U32(v.eos.unwrap()),
        ),
    ];
    m.push((
        "tokenizer.ggml.add_bos_token".to_string(),
        GgufValue::Bool(false),
    ));
    m
}

#[test]
fn from_gguf_file_metadata() {
    let v = byte_vocab();
    let file = gguf_with(meta_of(&v), "ok.gguf");
    let read = GgufVocab::from_gguf(&file).unwrap();
    assert_eq!(read.tokens, v.tokens);
    assert_eq!(read.merges, v.merges);
    assert_eq!(
        (read.bos, read.eos, read.add_bos),
        (v.bos, v.eos, Some(false))
    );
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(
        tok.encode("hello world", true, false).unwrap(),
        [id_of(&v, "hello"), id_of(&v, "Ġworld")]
    );

    // Wrong types and missing keys name the key.
    let mut m = meta_of(&v);
    m.retain(|(k, _)| k != "tokenizer.ggml.model");
    let msg = Tokenizer::from_gguf(&gguf_with(m, "no_model.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.ggml.model") && msg.contains("missing"),
        "{msg}"
    );

    let mut m = meta_of(&v);
    m[3].1 = GgufValue::String("not an array".into());
    let msg = Tokenizer::from_gguf(&gguf_with(m, "tokens_str.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.ggml.tokens") && msg.contains("not array"),
        "{msg}"
    );

    let mut m = meta_of(&v);
    m[6].1 = GgufValue::I32(-1);
    let msg = Tokenizer::from_gguf(&gguf_with(m, "neg_bos.gguf"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bos_token_id") && msg.contains("-1"), "{msg}");

    let mut m = meta_of(&v);
    m.push(("tokenizer.ggml.add_eos_token".to_string(), GgufValue::U8(1)));
    let msg = Tokenizer::from_gguf(&gguf_with(m, "bad_flag.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("add_eos_token") && msg.contains("not bool"),
        "{msg}"
    );
}
