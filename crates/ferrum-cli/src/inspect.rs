//! `ferrum inspect FILE [--json]`: a GGUF file's version, alignment, every
//! metadata key (type and value) and its tensor table.
//!
//! Text output abbreviates long arrays (length and the first few items) and
//! long strings; JSON gives arrays of up to 64 items in full and longer ones
//! as `{"type", "len", "head"}` so that a 150k-entry vocabulary stays readable.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ferrum_format::gguf::{GgufError, GgufFile, GgufValue};
use serde_json::{json, Value};

/// Items of a long array shown in text output.
const TEXT_HEAD: usize = 8;
/// Characters of a string value shown in text output.
const TEXT_MAX_STR: usize = 96;
/// Arrays longer than this are abbreviated in JSON output.
const JSON_FULL_ARRAY: usize = 64;
/// Items of an abbreviated array kept in JSON output.
const JSON_HEAD: usize = 16;

pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let file = GgufFile::open(path).map_err(|e| match e {
        // The I/O error already names the path.
        GgufError::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(path.display().to_string()),
    })?;
    let text = if json {
        serde_json::to_string_pretty(&to_json(&file))? + "\n"
    } else {
        render_text(&file)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `ferrum inspect FILE | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// `u32`, `string`, `array<string>`, `array<array<u32>>`, ...
fn type_desc(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(items) => match items.first() {
            Some(first) => format!("array<{}>", type_desc(first)),
            None => "array".to_string(),
        },
        v => v.type_name().to_string(),
    }
}

fn text_value(v: &GgufValue, out: &mut String) {
    match v {
        GgufValue::String(s) => {
            let shown: String = s.chars().take(TEXT_MAX_STR).collect();
            let _ = write!(out, "{shown:?}");
            if shown.len() < s.len() {
                let _ = write!(out, "... ({} bytes)", s.len());
            }
        }
        GgufValue::Array(items) => {
            if items.len() > TEXT_HEAD {
                let _ = write!(out, "({} items) ", items.len());
            }
            out.push('[');
            for (i, item) in items.iter().take(TEXT_HEAD).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                text_value(item, out);
            }
            if items.len() > TEXT_HEAD {
                out.push_str(", ...");
            }
            out.push(']');
        }
        GgufValue::U8(x) => push_display(out, x),
        GgufValue::I8(x) => push_display(out, x),
        GgufValue::U16(x) => push_display(out, x),
        GgufValue::I16(x) => push_display(out, x),
        GgufValue::U32(x) => push_display(out, x),
        GgufValue::I32(x) => push_display(out, x),
        GgufValue::U64(x) => push_display(out, x),
        GgufValue::I64(x) => push_display(out, x),
        GgufValue::F32(x) => push_display(out, x),
        GgufValue::F64(x) => push_display(out, x),
        GgufValue::Bool(x) => push_display(out, x),
    }
}

fn push_display(out: &mut String, x: impl std::fmt::Display) {
    let _ = write!(out, "{x}");
}

fn shape(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn render_text(f: &GgufFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "GGUF version {}, alignment {}, data offset {}, file size {} bytes",
        f.version(),
        f.alignment(),
        f.data_offset(),
        f.file_len()
    );
    let _ = writeln!(s, "\nmetadata ({} keys):", f.metadata().len());
    let key_w = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let types: Vec<String> = f.metadata().iter().map(|(_, v)| type_desc(v)).collect();
    let type_w = types.iter().map(String::len).max().unwrap_or(0);
    for ((k, v), ty) in f.metadata().iter().zip(&types) {
        let mut value = String::new();
        text_value(v, &mut value);
        let _ = writeln!(s, "  {k:key_w$}  {ty:type_w$}  {value}");
    }

    let _ = writeln!(s, "\ntensors ({}):", f.tensors().len());
    let rows: Vec<[String; 5]> = f
        .tensors()
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.ty.name().to_string(),
                shape(&t.dims),
                t.offset.to_string(),
                t.n_bytes().to_string(),
            ]
        })
        .collect();
    let header = ["name", "type", "shape (ne0 first)", "offset", "bytes"].map(String::from);
    let mut w = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (wi, cell) in w.iter_mut().zip(row) {
            *wi = (*wi).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let [name, ty, sh, off, bytes] = row;
        let _ = writeln!(
            s,
            "  {name:w0$}  {ty:w1$}  {sh:w2$}  {off:>w3$}  {bytes:>w4$}",
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes()).sum();
    let _ = writeln!(s, "\ntotal tensor data: {total} bytes");
    s
}

fn float_json(x: f64) -> Value {
    // JSON has no NaN or infinity; spell them as strings.
    serde_json::Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

fn value_json(v: &GgufValue) -> Value {
    match v {
        GgufValue::U8(x) => json!(x),
        GgufValue::I8(x) => json!(x),
        GgufValue::U16(x) => json!(x),
        GgufValue::I16(x) => json!(x),
        GgufValue::U32(x) => json!(x),
        GgufValue::I32(x) => json!(x),
        GgufValue::U64(x) => json!(x),
        GgufValue::I64(x) => json!(x),
        GgufValue::F32(x) => float_json(f64::from(*x)),
        GgufValue::F64(x) => float_json(*x),
        GgufValue::Bool(x) => json!(x),
        GgufValue::String(s) => json!(s),
        GgufValue::Array(items) if items.len() > JSON_FULL_ARRAY => json!({
            "type": type_desc(v),
            "len": items.len(),
            "head": items.iter().take(JSON_HEAD).map(value_json).collect::<Vec<_>>(),
        }),
        GgufValue::Array(items) => Value::Array(items.iter().map(value_json).collect()),
    }
}

fn to_json(f: &GgufFile) -> Value {
    let metadata: Vec<Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| json!({ "key": k, "type": type_desc(v), "value": value_json(v) }))
        .collect();
    let tensors: Vec<Value> = f
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.dims,
                "offset": t.offset,
                "bytes": t.n_bytes(),
            })
        })
        .collect();
    json!({
        "version": f.version(),
        "alignment": f.alignment(),
        "data_offset": f.data_offset(),
        "file_size": f.file_len(),
        "metadata": metadata,
        "tensors": tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrum_core::GgmlType;
    use ferrum_format::gguf::GgufWriter;

    fn sample() -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", GgufValue::String("qwen2".into()))
            .unwrap();
        let tokens = (0..100)
            .map(|i| GgufValue::String(format!("t{i}")))
            .collect();
        w.add_kv("tokenizer.ggml.tokens", GgufValue::Array(tokens))
            .unwrap();
        w.add_kv(
            "short",
            GgufValue::Array(vec![GgufValue::I32(-1), GgufValue::I32(2)]),
        )
        .unwrap();
        w.add_kv("nan", GgufValue::F32(f32::NAN)).unwrap();
        w.add_kv("long", GgufValue::String("x".repeat(500)))
            .unwrap();
        w.add_tensor("token_embd.weight", &[256, 2], GgmlType::Q4K)
            .unwrap();
        let mut sink = w.begin(Vec::new()).unwrap();
        sink.write_tensor("token_embd.weight", &[0; 288]).unwrap();
        GgufFile::from_bytes(sink.finish().unwrap()).unwrap()
    }

    #[test]
    fn text_lists_everything_and_abbreviates() {
        let text = render_text(&sample());
        assert!(text.contains("GGUF version 3, alignment 32"), "{text}");
        assert!(
            text.contains("general.architecture") && text.contains("\"qwen2\""),
            "{text}"
        );
        assert!(
            text.contains("array<string>") && text.contains("(100 items) [\"t0\""),
            "{text}"
        );
        assert!(!text.contains("\"t99\""), "{text}");
        assert!(text.contains("(500 bytes)"), "{text}");
        assert!(
            text.contains("token_embd.weight")
                && text.contains("Q4_K")
                && text.contains("[256, 2]"),
            "{text}"
        );
        assert!(text.contains("288"), "{text}");
    }

    #[test]
    fn json_is_one_object_with_abbreviated_long_arrays() {
        let v = to_json(&sample());
        assert_eq!(v["version"], 3);
        let meta = v["metadata"].as_array().unwrap();
        assert_eq!(meta[0]["value"], "qwen2");
        assert_eq!(meta[1]["value"]["type"], "array<string>");
        assert_eq!(meta[1]["value"]["len"], 100);
        assert_eq!(
            meta[1]["value"]["head"].as_array().unwrap().len(),
            JSON_HEAD
        );
        assert_eq!(meta[2]["value"], json!([-1, 2]));
        assert_eq!(meta[3]["value"], "NaN");
        assert_eq!(v["tensors"][0]["shape"], json!([256, 2]));
        assert_eq!(v["tensors"][0]["bytes"], 288);
        serde_json::to_string(&v).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ferrum-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x01\0\0\0").unwrap();
        let e = format!("{:#}", run(&bad, false).unwrap_err());
        assert!(e.contains("bad.gguf") && e.contains("version 1"), "{e}");
        let e = format!("{:#}", run(&dir.join("absent.gguf"), true).unwrap_err());
        assert!(e.contains("absent.gguf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
