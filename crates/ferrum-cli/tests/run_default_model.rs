//! `ferrum run` on the real default model (Qwen2.5-Coder-0.5B-Instruct
//! Q4_K_M): JSON with logprobs, seeded sampling, stop strings, the chat REPL
//! through stdin (KV of earlier turns reused), and a prompt too long for the
//! context. The model is found through $FERRUM_DEFAULT_MODEL or the Ferrum
//! cache; these tests fail when it is missing unless FERRUM_SKIP_MODEL_TESTS=1.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn default_model() -> Option<PathBuf> {
    let p = std::env::var_os("FERRUM_DEFAULT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        });
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "skipping: default model not found at {} (FERRUM_SKIP_MODEL_TESTS=1)",
            p.display()
        );
        return None;
    }
    panic!("default model missing at {}: run scripts/fetch-default-model.sh (or set FERRUM_DEFAULT_MODEL, or FERRUM_SKIP_MODEL_TESTS=1 to skip)", p.display());
}

fn run(model: &PathBuf, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .arg("run")
        .arg("-m")
        .arg(model)
        .args(args)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(model: &PathBuf, args: &[&str]) -> Value {
    let out = run(model, &[&["--json"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const PROMPT: &str = "Write a Python function that adds two numbers.";

#[test]
fn seeded_sampling_reproduces_with_logprobs() {
    let Some(m) = default_model() else { return };
    let args = [
        "--max-tokens",
        "8",
        "--seed",
        "1234",
        "--temperature",
        "0.9",
        "--logprobs",
        "3",
        PROMPT,
    ];
    let a = json(&m, &args);
    let b = json(&m, &args);
    assert_eq!(a["completion_tokens"], b["completion_tokens"]);
    assert_eq!(a["text"], b["text"]);
    let steps = a["logprobs"].as_array().unwrap();
    let chosen = a["token_logprobs"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        a["completion_tokens"].as_array().unwrap().len()
    );
    for (top, lp) in steps.iter().zip(chosen) {
        let top = top.as_array().unwrap();
        assert_eq!(top.len(), 3);
        let best = top[0]["logprob"].as_f64().unwrap();
        assert!(best <= 0.0 && lp.as_f64().unwrap() <= best + 1e-6);
    }
    // The chat template was applied: the prompt starts with <|im_start|>.
    assert_eq!(a["prompt_tokens"][0], 151644);
    assert!(a["timings"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn stop_string_cuts_the_streamed_answer() {
    let Some(m) = default_model() else { return };
    let full = json(&m, &["--max-tokens", "32", "--temperature", "0", PROMPT]);
    let text = full["text"].as_str().unwrap();
    let at = text.find("def ").unwrap_or_else(|| panic!("{text:?}"));
    // "(a" style stops span token boundaries; "def add" does too ("def", " add").
    let stop = &text[at..at + 7];
    let out = run(
        &m,
        &[
            "--max-tokens",
            "32",
            "--temperature",
            "0",
            "--stop",
            stop,
            PROMPT,
        ],
    );
    assert!(out.status.success());
    let streamed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        streamed.strip_suffix('\n').unwrap(),
        &text[..at],
        "stop {stop:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("finish: stop"));
}

#[test]
fn chat_repl_through_stdin_reuses_earlier_turns() {
    let Some(m) = default_model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args([
            "run",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "--system",
            "Answer in one word.",
            "-m",
        ])
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What color is the sky?\nAnd grass?\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("prefill:")).collect();
    assert_eq!(stats.len(), 2, "{err}");
    assert!(
        stats[1].contains("reused"),
        "second turn re-prefilled everything: {err}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.to_lowercase().contains("blue"), "{stdout:?}");
}

#[test]
fn prompt_too_long_for_the_context() {
    let Some(m) = default_model() else { return };
    let out = run(&m, &["--ctx", "32", &"word ".repeat(100)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("context holds 32") && err.lines().count() == 1,
        "{err}"
    );
}

/// Ctrl-C (SIGINT) during an answer ends that answer; the chat goes on.
#[test]
fn interrupt_stops_the_answer_not_the_repl() {
    use std::io::Read;
    let Some(m) = default_model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args(["run", "--temperature", "0", "--max-tokens", "60", "-m"])
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Write a long essay about the history of Rust.\nSay OK.\n/exit\n")
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Wait for the first streamed bytes, then interrupt.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("prefill:")).collect();
    assert_eq!(stats.len(), 2, "{err}");
    assert!(stats[0].contains("finish: interrupted"), "{err}");
    assert!(!stats[1].contains("interrupted"), "{err}");
}
