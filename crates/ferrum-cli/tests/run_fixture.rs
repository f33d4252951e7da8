//! `ferrum run` on the tiny fixture models (random weights, fast): JSON
//! output, logprobs, seeds, stop strings, context limits, the REPL through
//! stdin with KV reuse, and chat-template errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferrum_format::gguf::{write_file, GgufFile, GgufTensorData, GgufValue};
use serde_json::Value;

fn ferrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrum"))
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/qwen2/model-q8_0.gguf")
}

fn run(args: &[&str]) -> Output {
    let out = ferrum()
        .arg("run")
        .arg("-m")
        .arg(fixture())
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    out
}

fn run_json(args: &[&str]) -> Value {
    let out = run(&[&["--raw", "--json"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = ferrum()
        .arg("run")
        .arg("-m")
        .arg(fixture())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn json_has_ids_text_logprobs_and_timings() {
    let v = run_json(&[
        "--max-tokens",
        "7",
        "--logprobs",
        "3",
        "--seed",
        "5",
        "hello world",
    ]);
    assert!(!ids(&v["prompt_tokens"]).is_empty());
    let completion = ids(&v["completion_tokens"]);
    assert_eq!(completion.len(), 7);
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["seed"], 5);
    let steps = v["logprobs"].as_array().unwrap();
    assert_eq!(steps.len(), 7);
    for (step, &id) in steps.iter().zip(&completion) {
        let top = step.as_array().unwrap();
        assert_eq!(top.len(), 3);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(
            lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0,
            "{lps:?}"
        );
        assert!(top.iter().all(|t| t["id"].as_u64().is_some()));
        let _ = id;
    }
    assert_eq!(v["token_logprobs"].as_array().unwrap().len(), 7);
    for key in [
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "prefill_s",
        "decode_s",
        "load_s",
    ] {
        assert!(v["timings"][key].as_f64().is_some(), "{key}");
    }
}

#[test]
fn greedy_picks_the_top_logprob() {
    let v = run_json(&[
        "--max-tokens",
        "5",
        "--logprobs",
        "1",
        "--temperature",
        "0",
        "abc",
    ]);
    for (step, id) in v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(ids(&v["completion_tokens"]))
    {
        assert_eq!(step[0]["id"].as_u64().unwrap(), id);
    }
}

#[test]
fn a_seed_reproduces_the_answer() {
    let args = [
        "--max-tokens",
        "12",
        "--temperature",
        "1.5",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
    ];
    let a = run_json(&[&args[..], &["--seed", "11", "x"]].concat());
    let b = run_json(&[&args[..], &["--seed", "11", "x"]].concat());
    let c = run_json(&[&args[..], &["--seed", "12", "x"]].concat());
    assert_eq!(a["completion_tokens"], b["completion_tokens"]);
    assert_eq!(a["text"], b["text"]);
    assert_ne!(
        a["completion_tokens"], c["completion_tokens"],
        "different seeds gave the same 12 tokens"
    );
}

#[test]
fn stop_string_spanning_tokens_ends_the_answer() {
    let full = run_json(&["--max-tokens", "24", "--temperature", "0", "hello"]);
    let text = full["text"].as_str().unwrap().to_string();
    // Byte offsets of the token boundaries, from the tokenizer itself.
    let tok = ferrum_text::Tokenizer::from_gguf(&GgufFile::open(&fixture()).unwrap()).unwrap();
    let mut ends = Vec::new();
    let mut bytes = Vec::new();
    for id in ids(&full["completion_tokens"]) {
        bytes.extend(tok.token_bytes(id as u32).unwrap());
        ends.push(bytes.len());
    }
    assert_eq!(String::from_utf8_lossy(&bytes), text);
    // A stop made of the last character of one token and the first of the
    // next (both ASCII, so the stop really spans the boundary).
    let stop = ends[..ends.len() - 1]
        .iter()
        .find_map(|&end| {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let before = head.chars().last()?;
            let after = text.strip_prefix(head.as_str())?.chars().next()?;
            (before.is_ascii_graphic() && after.is_ascii_graphic())
                .then(|| format!("{before}{after}"))
        })
        .unwrap_or_else(|| panic!("no ASCII token boundary in {text:?}"));
    let stop = stop.as_str();
    let first = text.find(stop).unwrap();
    let v = run_json(&[
        "--max-tokens",
        "24",
        "--temperature",
        "0",
        "--stop",
        stop,
        "hello",
    ]);
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["text"].as_str().unwrap(), &text[..first], "stop {stop:?}");
}

#[test]
fn prompt_longer_than_the_context() {
    let long = "ab ".repeat(40);
    let out = run(&["--raw", "--ctx", "16", &long]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("context holds 16") && err.contains("--truncate"),
        "{err}"
    );
    let v = run_json(&["--ctx", "16", "--truncate", "--max-tokens", "4", &long]);
    assert!(ids(&v["prompt_tokens"]).len() <= 12);
    assert!(!ids(&v["completion_tokens"]).is_empty());
}

#[test]
fn no_chat_template_needs_raw() {
    let out = run(&["hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--raw"));
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json needs a PROMPT"));
}

#[test]
fn bad_sampling_flags_are_errors() {
    let out = run(&["--raw", "--top-p", "0", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));
    let out = run(&["--raw", "--logit-bias", "99999999=1", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("99999999"));
}

#[test]
fn logit_bias_bans_the_greedy_token() {
    let v = run_json(&[
        "--max-tokens",
        "1",
        "--temperature",
        "0",
        "--logprobs",
        "2",
        "q",
    ]);
    let first = v["completion_tokens"][0].as_u64().unwrap();
    let second_best = v["logprobs"][0][1]["id"].as_u64().unwrap();
    let w = run_json(&[
        "--max-tokens",
        "1",
        "--temperature",
        "0",
        "--logit-bias",
        &format!("{first}=-inf"),
        "q",
    ]);
    assert_eq!(w["completion_tokens"][0].as_u64().unwrap(), second_best);
}

/// The REPL in raw mode: the second turn reuses the first turn's cache and
/// answers exactly what a fresh run over the whole transcript answers.
#[test]
fn repl_reuses_the_cache_and_matches_a_fresh_run() {
    let first = run_json(&["--max-tokens", "6", "--temperature", "0", "hello"]);
    let answer1 = first["text"].as_str().unwrap().to_string();
    let out = with_stdin(
        &["--raw", "--temperature", "0", "--max-tokens", "6"],
        "hello\n world\n/exit\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reused"), "{err}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rest = stdout
        .strip_prefix(&format!("{answer1}\n"))
        .unwrap_or_else(|| panic!("{stdout:?} does not start with {answer1:?}"));
    let answer2 = rest.strip_suffix('\n').unwrap();
    let fresh = run_json(&[
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        &format!("hello{answer1} world"),
    ]);
    assert_eq!(fresh["text"].as_str().unwrap(), answer2);
}

#[test]
fn repl_commands_and_end_of_input() {
    let out = with_stdin(
        &["--raw", "--temperature", "0", "--max-tokens", "3"],
        "a\n/clear\n/nope\nb\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cleared") && err.contains("unknown command /nope"),
        "{err}"
    );
    assert_eq!(err.matches("prefill:").count(), 2, "{err}");
    assert!(!err.contains("reused"), "/clear must drop the cache: {err}");
}

/// A copy of the fixture with `tokenizer.chat_template` set to `template`.
fn with_template(template: &str, name: &str) -> PathBuf {
    let src = GgufFile::open(&fixture()).unwrap();
    let mut meta: Vec<(String, GgufValue)> = src
        .metadata()
        .iter()
        .filter(|(k, _)| k != "tokenizer.chat_template" && k != "general.alignment")
        .cloned()
        .collect();
    meta.push((
        "tokenizer.chat_template".into(),
        GgufValue::String(template.into()),
    ));
    let tensors: Vec<GgufTensorData> = src
        .tensors()
        .iter()
        .map(|t| GgufTensorData {
            name: &t.name,
            dims: &t.dims,
            ty: t.ty,
            data: src.tensor_data(t),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("ferrum-run-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    write_file(&path, &meta, &tensors).unwrap();
    path
}

fn run_model(model: &Path, args: &[&str]) -> Output {
    ferrum()
        .arg("run")
        .arg("-m")
        .arg(model)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn chat_template_is_used_and_its_errors_name_the_line() {
    let ok = with_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}", "ok.gguf");
    let out = run_model(
        &ok,
        &["--json", "--max-tokens", "2", "--system", "sys", "hi"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let raw = run_json(&["--max-tokens", "1", "system: sys\nuser: hi\nassistant:"]);
    assert_eq!(v["prompt_tokens"], raw["prompt_tokens"]);

    let bad = with_template("line one\n{% for m in messages %}\n{{ raise_exception('roles must alternate') }}\n{% endfor %}", "raise.gguf");
    let out = run_model(&bad, &["hi"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roles must alternate") && err.contains("line 3"),
        "{err}"
    );

    let syntax = with_template("a\nb\n{% if %}", "syntax.gguf");
    let out = run_model(&syntax, &["hi"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && !err.contains("panicked"), "{err}");
}

#[test]
fn hugging_face_directory_with_generation_config() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2/hf");
    let out = run_model(&dir, &["--raw", "--json", "--max-tokens", "3", "ab"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v["completion_tokens"]).len(), 3);
}
