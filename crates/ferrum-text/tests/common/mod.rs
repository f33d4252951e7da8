//! Shared helpers for tests that need the real default model.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrum_format::gguf::GgufFile;
use ferrum_text::Tokenizer;

pub const MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// Repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/text").join(name)
}

/// Path of the default model: $FERRUM_DEFAULT_MODEL, else
/// ~/.cache/ferrum/models/<MODEL_FILE>. `None` only when the model is absent
/// and FERRUM_SKIP_MODEL_TESTS=1; absent otherwise is a test failure.
pub fn default_model() -> Option<PathBuf> {
    let path = match std::env::var_os("FERRUM_DEFAULT_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/ferrum/models").join(MODEL_FILE)
        }
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "skipping: default model not found at {} (FERRUM_SKIP_MODEL_TESTS=1)",
            path.display()
        );
        return None;
    }
    panic!(
        "default model not found at {}: run scripts/fetch-default-model.sh \
         (or set FERRUM_DEFAULT_MODEL, or FERRUM_SKIP_MODEL_TESTS=1 to skip)",
        path.display()
    );
}

/// The default model's GGUF tokenizer, built once per test binary.
pub fn default_tokenizer() -> Option<&'static Tokenizer> {
    static TOK: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = default_model()?;
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Some(Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    })
    .as_ref()
}

/// `tests/fixtures/text/<name>` parsed as JSON.
pub fn fixture_json(name: &str) -> serde_json::Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(name, text)` of every corpus entry.
pub fn corpus() -> Vec<(String, String)> {
    fixture_json("corpus.json")["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id array: {v}"))
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

/// Goldens file entries keyed by corpus name.
pub fn golden_entries(file: &str) -> std::collections::HashMap<String, serde_json::Value> {
    fixture_json(file)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// A GgufVocab from the `vocab` object of spm_tiny.json / bpe_tiny.json.
pub fn vocab_from_json(v: &serde_json::Value) -> ferrum_text::GgufVocab {
    let strings = |k: &str| {
        v.get(k).map(|a| {
            a.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };
    let id = |k: &str| {
        v.get(k)
            .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
    };
    ferrum_text::GgufVocab {
        model: v["model"].as_str().unwrap().to_string(),
        pre: v.get("pre").map(|p| p.as_str().unwrap().to_string()),
        tokens: strings("tokens").unwrap(),
        token_types: v.get("token_types").map(|a| {
            a.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap() as i32)
                .collect()
        }),
        scores: v.get("scores").map(|a| {
            a.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap() as f32)
                .collect()
        }),
        merges: strings("merges"),
        bos: id("bos"),
        eos: id("eos"),
        unknown: id("unknown"),
        add_bos: v.get("add_bos").map(|b| b.as_bool().unwrap()),
        ..Default::default()
    }
}
