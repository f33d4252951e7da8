//! `tokenizer.ggml.*` metadata: a synthetic byte-level BPE vocabulary, one
//! converted from a Hugging Face `tokenizer.json`, or one copied from a
//! donor GGUF. The token count always equals the embedding's row count
//! (llama.cpp requires it): shorter vocabularies are padded with
//! `[PAD{id}]` tokens of type UNUSED, as llama.cpp's converter pads them.

use std::collections::HashMap;
use std::path::Path;

use ferrum_format::gguf::{GgufFile, GgufValue};
use serde_json::Value;

use super::gguf_meta::Kv;
use super::{ConvertError, Result};

/// llama.cpp token types.
pub const NORMAL: i32 = 1;
pub const UNUSED: i32 = 5;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;

/// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 onwards, in byte order.
pub fn byte_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let cp = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        out[b as usize] = char::from_u32(cp).unwrap_or('?');
    }
    out
}

fn strings(v: Vec<String>) -> GgufValue {
    GgufValue::Array(v.into_iter().map(GgufValue::String).collect())
}

fn ints(v: &[i32]) -> GgufValue {
    GgufValue::Array(v.iter().map(|&t| GgufValue::I32(t)).collect())
}

/// A vocabulary of `n` tokens that llama.cpp and Ferrum can load:
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (control), the 256
/// byte tokens, two-letter merges over `Ġa-z`, then filler `Ġw{id}` tokens.
/// bos = 0, eos = 2. `n` must be at least 259 (3 specials + 256 bytes);
/// smaller vocabularies get only what fits.
pub fn synthetic_kvs(n: usize) -> Vec<Kv> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().map(|s| s.to_string()).collect();
    let mut types = vec![CONTROL; 3];
    tokens.extend(byte_to_unicode().iter().map(|c| c.to_string()));
    types.resize(tokens.len(), NORMAL);
    let letters: Vec<char> = std::iter::once('Ġ').chain('a'..='z').collect();
    let mut merges = Vec::new();
    'pairs: for &a in &letters {
        for &b in &letters {
            if tokens.len() >= n {
                break 'pairs;
            }
            tokens.push(format!("{a}{b}"));
            merges.push(format!("{a} {b}"));
        }
    }
    while tokens.len() < n {
        tokens.push(format!("Ġw{}", tokens.len()));
    }
    tokens.truncate(n);
    types.resize(tokens.len(), NORMAL);
    vec![
        ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), GgufValue::String("gpt-2".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), ints(&types)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2.min(n.saturating_sub(1)) as u32)),
        ("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false)),
    ]
}

/// Every `tokenizer.*` key of a donor GGUF, its vocabulary padded to `n`
/// tokens; a donor with more than `n` tokens is an error.
pub fn donor_kvs(path: &Path, n: usize) -> Result<Vec<Kv>> {
    let donor = |reason: String| ConvertError::Donor { path: path.to_path_buf(), reason };
    let f = GgufFile::open(path)?;
    let mut kv: Vec<Kv> = f.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect();
    let count = f
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .map(<[_]>::len)
        .ok_or_else(|| donor("has no tokenizer.ggml.tokens array".into()))?;
    if count > n {
        return Err(donor(format!("has {count} tokens, more than the {n} embedding rows of this model")));
    }
    for (key, value) in kv.iter_mut() {
        let GgufValue::Array(items) = value else { continue };
        match key.as_str() {
            "tokenizer.ggml.tokens" => items.extend((count..n).map(|i| GgufValue::String(format!("[PAD{i}]")))),
            "tokenizer.ggml.token_type" => items.extend((count..n).map(|_| GgufValue::I32(UNUSED))),
            "tokenizer.ggml.scores" => items.extend((count..n).map(|_| GgufValue::F32(0.0))),
            _ => {}
        }
    }
    Ok(kv)
}

/// A special token given in tokenizer_config.json as a string or as
/// `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// llama.cpp's name for the split a byte-level `pre_tokenizer` performs.
fn pre_name(pre: &Value) -> &'static str {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(pre, &mut all);
    if all.iter().any(|s| s.contains(r"\p{N}{1,3}")) {
        "llama-bpe"
    } else if all.iter().any(|s| s.contains(r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|")) {
        "qwen2"
    } else {
        "gpt-2"
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Input { path: path.to_path_buf(), error: source })?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Tokenizer { path: path.to_path_buf(), reason: e.to_string() })
}

/// Convert `dir/tokenizer.json` (a byte-level BPE, as Qwen and Llama 3 ship)
/// to `tokenizer.ggml.*`, padded to `n` tokens. Special ids come from
/// `tokenizer_config.json` when it names them, else from config.json
/// (`bos`, `eos`). The chat template is copied when present.
pub fn hf_kvs(dir: &Path, n: usize, bos: u32, eos: u32) -> Result<Vec<Kv>> {
    let path = dir.join("tokenizer.json");
    let bad = |reason: String| ConvertError::Tokenizer { path: path.clone(), reason };
    if !path.is_file() {
        return Err(bad("not found (quantize needs the HF tokenizer to write the GGUF vocabulary)".into()));
    }
    let tj = read_json(&path)?;
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(bad(format!("model type {} is not a byte-level BPE; only those are supported", model["type"])));
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut by_id: HashMap<usize, (String, i32)> = HashMap::new();
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad(format!("token {tok:?} has a non-integer id")))? as usize;
        by_id.insert(id, (tok.clone(), NORMAL));
    }
    for t in tj["added_tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(bad(format!("added token {t} lacks an id or content")));
        };
        let ty = if t["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED };
        by_id.insert(id as usize, (content.to_string(), ty));
    }
    if let Some(max) = by_id.keys().max().filter(|&&m| m >= n) {
        return Err(bad(format!("token id {max} does not fit the {n} embedding rows")));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let (t, ty) = by_id.remove(&i).unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED));
        tokens.push(t);
        types.push(ty);
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match (pair.first().and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
                (Some(a), Some(b)) if pair.len() == 2 => Ok(format!("{a} {b}")),
                _ => Err(bad(format!("merge {m} is not a pair of strings"))),
            },
            other => Err(bad(format!("merge {other} is not a string or a pair"))),
        })
        .collect::<Result<_>>()?;
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.is_file() { read_json(&config_path)? } else { Value::Null };
    let id_of = |key: &str, default: u32| -> u32 {
        token_text(config.get(key)).and_then(|text| tokens.iter().position(|t| t == text)).map_or(default, |i| i as u32)
    };
    let (bos, eos) = (id_of("bos_token", bos), id_of("eos_token", eos));
    let pad = id_of("pad_token", bos);
    let mut kv: Vec<Kv> = vec![
        ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), GgufValue::String(pre_name(&tj["pre_tokenizer"]).into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), ints(&types)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(bos)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(eos)),
        ("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(pad)),
    ];
    if let Some(add) = config.get("add_bos_token").and_then(Value::as_bool) {
        kv.push(("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(add)));
    }
    if let Some(t) = config.get("chat_template").and_then(Value::as_str) {
        kv.push(("tokenizer.chat_template".into(), GgufValue::String(t.to_string())));
    }
    Ok(kv)
}

/// Hugging Face's split regex for a llama.cpp `pre` name (None: GPT-2's,
/// which `ByteLevel` with `use_regex` applies itself).
fn hf_split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "qwen2" => Some(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
        "llama-bpe" => Some(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
        _ => None,
    }
}

/// `tokenizer.json` and `tokenizer_config.json` for a byte-level (`gpt2`)
/// GGUF vocabulary given as `tokenizer.*` metadata; `None` for other
/// tokenizer models.
pub fn hf_tokenizer_files(kv: &[Kv]) -> Option<(Value, Value)> {
    use serde_json::{json, Map};
    let get = |key: &str| kv.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if get("tokenizer.ggml.model").and_then(GgufValue::as_str) != Some("gpt2") {
        return None;
    }
    let tokens: Vec<&str> = get("tokenizer.ggml.tokens")?.as_array()?.iter().filter_map(GgufValue::as_str).collect();
    let types: Vec<i64> =
        get("tokenizer.ggml.token_type").and_then(GgufValue::as_array).map_or_else(Vec::new, |a| a.iter().filter_map(GgufValue::as_i64).collect());
    let merges: Vec<&str> =
        get("tokenizer.ggml.merges").and_then(GgufValue::as_array).map_or_else(Vec::new, |a| a.iter().filter_map(GgufValue::as_str).collect());
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.to_string(), json!(id));
        let ty = types.get(id).copied().unwrap_or(NORMAL as i64);
        if ty == CONTROL as i64 || ty == USER_DEFINED as i64 {
            added.push(json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": ty == CONTROL as i64}));
        }
    }
    let pre = get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("gpt-2");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match hf_split_regex(pre) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
        None => byte_level(true),
    };
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null, "decoder": byte_level(true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": pre == "llama-bpe",
                  "vocab": vocab, "merges": merges},
    });
    let name = |key: &str| get(key).and_then(GgufValue::as_u64).and_then(|id| tokens.get(id as usize)).map(|t| json!(t));
    let mut config = json!({"tokenizer_class": "PreTrainedTokenizerFast"});
    for (hf, key) in
        [("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id"), ("pad_token", "tokenizer.ggml.padding_token_id")]
    {
        if let Some(t) = name(key) {
            config[hf] = t;
        }
    }
    if let Some(add) = get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool) {
        config["add_bos_token"] = json!(add);
    }
    if let Some(t) = get("tokenizer.chat_template").and_then(GgufValue::as_str) {
        config["chat_template"] = json!(t);
    }
    Some((tokenizer, config))
}
