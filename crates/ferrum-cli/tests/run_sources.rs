//! Where `-m MODEL` comes from, and the errors when it cannot be had:
//! one line, exit status 2, naming the sources tried and how to provide
//! the file. No test here needs the network.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let home = std::env::temp_dir().join(format!("ferrum-sources-{}", std::process::id()));
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .arg("run")
        .args(args)
        .env("HF_HOME", home.join("hf"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn unknown_alias() {
    let (out, _) = run(&["-m", "nosuch:7b", "hi"], &[]);
    let err = one_line_error(&out);
    assert!(
        err.contains("nosuch:7b") && err.contains("qwen2.5-coder:0.5b"),
        "{err}"
    );
}

#[test]
fn missing_path() {
    let (out, _) = run(&["-m", "/nonexistent/model.gguf", "hi"], &[]);
    let err = one_line_error(&out);
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn unreadable_file() {
    let dir = std::env::temp_dir().join(format!("ferrum-sources-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("garbage.gguf");
    std::fs::write(&p, b"not a gguf file at all").unwrap();
    let (out, _) = run(&["-m", p.to_str().unwrap(), "hi"], &[]);
    let err = one_line_error(&out);
    assert!(err.contains("garbage.gguf"), "{err}");
}

#[test]
fn hub_repo_offline_names_the_sources_tried() {
    let (out, took) = run(
        &["-m", "nobody/no-such-model-GGUF", "hi"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    let err = one_line_error(&out);
    for part in [
        "nobody/no-such-model-GGUF",
        "local path",
        "aliases",
        "Hugging Face",
        "HF_HUB_OFFLINE",
        "-m PATH",
    ] {
        assert!(err.contains(part), "missing {part:?}: {err}");
    }
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn hub_unreachable_fails_quickly() {
    // Port 9 (discard) on loopback: connection refused at once.
    let (out, took) = run(
        &["-m", "nobody/no-such-model-GGUF:q4_k_m", "hi"],
        &[
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_HUB_OFFLINE", "0"),
        ],
    );
    let err = one_line_error(&out);
    assert!(
        err.contains("Hugging Face hub") && err.contains("nobody/no-such-model-GGUF"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn cached_hub_file_is_used_offline() {
    // A file placed in the HF cache layout is found without any network.
    let home = std::env::temp_dir().join(format!("ferrum-sources-cache-{}", std::process::id()));
    let repo = home.join("hub/models--someone--tiny-GGUF");
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/qwen2/model-q8_0.gguf");
    std::fs::copy(fixture, snap.join("tiny-Q8_0.gguf")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args([
            "run",
            "-m",
            "someone/tiny-GGUF",
            "--raw",
            "--max-tokens",
            "2",
            "ab",
        ])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
