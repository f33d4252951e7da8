//! `ferrum serve` on the real default model, driven by the official `openai`
//! Python client (tests/server/openai_client_test.py), then shut down with
//! SIGTERM (exit 0). Registered as a test of ferrum-cli, whose binary it runs.
//!
//! The model: $FERRUM_DEFAULT_MODEL, else
//! ~/.cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf.
//! FERRUM_SKIP_MODEL_TESTS=1 skips it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FERRUM_DEFAULT_MODEL") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    Some(PathBuf::from(home).join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the server if the test fails before its orderly shutdown.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn openai_python_client_against_ferrum_serve() {
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: FERRUM_SKIP_MODEL_TESTS=1");
        return;
    }
    let model = model_path().expect("HOME is not set and FERRUM_DEFAULT_MODEL is not given");
    assert!(
        model.is_file(),
        "the default model {} is missing: run scripts/fetch-default-model.sh (or `ferrum run` once), set FERRUM_DEFAULT_MODEL, or set FERRUM_SKIP_MODEL_TESTS=1",
        model.display()
    );
    let pip = Command::new("python3").args(["-m", "pip", "install", "-q", "openai"]).status().expect("python3 is needed for this test");
    assert!(pip.success(), "pip install openai failed");

    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args(["serve", "-m"])
        .arg(&model)
        .args(["--port", &port.to_string(), "--max-model-len", "1024", "--kv-cache-tokens", "4096", "--api-key", "test-key"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting ferrum serve");
    let stdout = child.stdout.take().unwrap();
    let mut server = Server(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[server] {line}");
            let _ = tx.send(line);
        }
    });
    let t = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(180).saturating_sub(t.elapsed())).expect("the server did not report ready");
        if line.contains("ready on") {
            assert!(line.contains("KV capacity 4096 tokens") && line.contains("warm-up"), "{line}");
            break;
        }
    }

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/server/openai_client_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://127.0.0.1:{port}/v1"), "--api-key", "test-key"])
        .output()
        .expect("running the openai client script");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the openai client checks failed");

    // SIGTERM: graceful shutdown, exit status 0.
    let child = server.0.as_mut().unwrap();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ferrum serve exited with {status} after SIGTERM");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "ferrum serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.0 = None;
}
