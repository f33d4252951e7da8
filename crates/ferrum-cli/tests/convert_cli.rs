//! `ferrum synth` and `ferrum quantize` end to end: a tiny preset and a
//! fixture quantization run and the outputs load; bad presets, types and
//! output paths fail with one clear line, before any work.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ferrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrum")).args(args).output().unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrum-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn synth_then_quantize_then_inspect() {
    let f16 = tmp("tiny-f16.gguf");
    let o = ferrum(&["synth", "qwen3moe-tiny", "-o", f16.to_str().unwrap(), "--quant", "F16", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrote"), "{}", stderr(&o));
    let q = tmp("tiny-q4.gguf");
    let o = ferrum(&["quantize", f16.to_str().unwrap(), q.to_str().unwrap(), "--type", "q4_k_m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Q4_K"), "{}", stderr(&o));
    let o = ferrum(&["inspect", "--json", q.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("ffn_down_exps") && text.contains("Q6_K") && text.contains("Q4_K"), "{text}");
    let o = ferrum(&["run", "-m", q.to_str().unwrap(), "--raw", "--max-tokens", "4", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for p in [f16, q] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn quantize_hf_fixture() {
    let out = tmp("qwen2-q8.gguf");
    let input = root().join("tests/fixtures/models/qwen2/hf");
    let o = ferrum(&["quantize", input.to_str().unwrap(), out.to_str().unwrap(), "--type", "Q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ferrum(&["run", "-m", out.to_str().unwrap(), "--raw", "--max-tokens", "3", "the cat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_file(out);
}

#[test]
fn synth_safetensors_dir_runs() {
    let dir = tmp("llama-tiny-hf");
    let o = ferrum(&["synth", "llama-tiny", "--format", "safetensors", "-o", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("config.json").is_file() && dir.join("model.safetensors").is_file());
    // tokenizer.json is written too, so the directory runs as it is.
    let o = ferrum(&["run", "-m", dir.to_str().unwrap(), "--raw", "--max-tokens", "3", "hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_preset_type_and_output_fail_fast() {
    let out = tmp("never.gguf");
    let o = ferrum(&["synth", "qwen9-1t", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("unknown preset `qwen9-1t`") && e.contains("qwen3moe-30b-a3b") && e.contains("llama-tiny"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    let o = ferrum(&["synth", "qwen3-tiny", "-o", out.to_str().unwrap(), "--quant", "q2_k"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Q4_K_M, Q5_K_M, Q6_K, Q8_0, F16"), "{}", stderr(&o));
    let o = ferrum(&["quantize", "in", out.to_str().unwrap(), "--type", "IQ2_XS"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Q4_K_M, Q5_K_M, Q6_K, Q8_0, F16"), "{}", stderr(&o));
    assert!(!out.exists());

    // An unwritable output fails at once, even for the 17 GB preset.
    let blocker = tmp("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("out.gguf");
    let start = Instant::now();
    let o = ferrum(&["synth", "qwen3moe-30b-a3b", "-o", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot write") && stderr(&o).contains("out.gguf"), "{}", stderr(&o));
    let input = root().join("tests/fixtures/models/qwen3/model-f32.gguf");
    let o = ferrum(&["quantize", input.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    let _ = std::fs::remove_file(blocker);
}
