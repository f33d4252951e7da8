//! The `ferrum` binary end to end: inspect, run, perplexity, bad input.

use std::path::PathBuf;
use std::process::Command;

fn ferrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrum"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(family: &str, file: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(family).join(file)
}

fn default_model() -> Option<PathBuf> {
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        return None;
    }
    let p = std::env::var_os("FERRUM_DEFAULT_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    assert!(p.exists(), "default model missing at {}: run scripts/fetch-default-model.sh", p.display());
    Some(p)
}

#[test]
fn inspect_text_and_json() {
    let f = fixture("qwen3moe", "model-q8_0.gguf");
    let out = ferrum().arg("inspect").arg(&f).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("qwen3moe.expert_count"));
    assert!(text.contains("blk.0.ffn_gate_exps.weight"));
    let out = ferrum().arg("inspect").arg("--json").arg(&f).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("ffn_down_exps"));
}

#[test]
fn inspect_malformed_file_fails_cleanly() {
    let dir = std::env::temp_dir().join(format!("ferrum-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture("qwen2", "model-f16.gguf")).unwrap();
    let bad = dir.join("truncated.gguf");
    std::fs::write(&bad, &bytes[..1000]).unwrap();
    let out = ferrum().arg("inspect").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_model_is_a_one_line_error() {
    let out = ferrum().args(["run", "-m", "no-such-model:7b", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model:7b") && err.contains("known"), "{err}");
}

#[test]
fn unsupported_architecture_is_an_error() {
    // Rewrite the architecture string of a fixture to one Ferrum does not know.
    let mut bytes = std::fs::read(fixture("qwen3", "model-f16.gguf")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"qwen3").unwrap();
    bytes[at..at + 5].copy_from_slice(b"qwen9");
    let p = std::env::temp_dir().join(format!("ferrum-arch-{}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    let out = ferrum().args(["run", "--raw", "-m"]).arg(&p).arg("x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported architecture") || err.contains("qwen9"), "{err}");
}

#[test]
fn run_raw_on_fixture() {
    let out = ferrum().args(["run", "--raw", "--max-tokens", "8", "-m"]).arg(fixture("qwen2", "model-q8_0.gguf")).arg("ab").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decode"));
}

#[test]
fn run_default_model_answers() {
    let Some(m) = default_model() else { return };
    let out = ferrum().args(["run", "--max-tokens", "24", "--temperature", "0", "-m"]).arg(&m).arg("Write a Python function that adds two numbers.").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("def "), "{text}");
}

/// llama.cpp (same model, ctx 512, GPL-3 text): PPL = 5.3158.
#[test]
fn perplexity_matches_llama_cpp() {
    let Some(m) = default_model() else { return };
    let text = root().join("tests/fixtures/text/GPL-3");
    let out = ferrum().args(["perplexity", "--ctx", "512", "-m"]).arg(&m).arg(&text).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let ppl: f64 = last.strip_prefix("PPL = ").unwrap().parse().unwrap();
    eprintln!("ferrum PPL = {ppl:.4}; llama.cpp 5.3158");
    assert!((ppl / 5.3158 - 1.0).abs() < 0.01, "{last}");
}

#[test]
fn bench_reports_pp_and_tg_at_several_batch_sizes() {
    let out = ferrum()
        .args(["bench", "-p", "16", "-n", "4", "-r", "2", "--batch", "1,3", "--json", "-m"])
        .arg(fixture("qwen3moe", "model-q8_0.gguf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let tests: Vec<(String, u64)> = rows.iter().map(|r| (r["test"].as_str().unwrap().to_string(), r["batch"].as_u64().unwrap())).collect();
    assert_eq!(tests, [("pp16".to_string(), 1), ("tg4".to_string(), 1), ("tg4".to_string(), 3)]);
    for r in &rows {
        assert_eq!(r["runs"].as_array().unwrap().len(), 2);
        assert!(r["tokens_per_s_mean"].as_f64().unwrap() > 0.0);
    }
    let md = ferrum().args(["bench", "-p", "8", "-n", "2", "-r", "1", "-m"]).arg(fixture("qwen2", "model-f16.gguf")).output().unwrap();
    assert!(md.status.success());
    assert!(String::from_utf8_lossy(&md.stdout).contains("| pp8 |"));
    let bad = ferrum().args(["bench", "--backend", "tpu", "-m"]).arg(fixture("qwen2", "model-f16.gguf")).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
