//! `ferrum bench serve` against `ferrum serve` on the tiny qwen2 fixture:
//! a closed-loop run, a Poisson run, and a dead server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2/model-q8_0.gguf")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the server when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> (Server, String) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args(["serve", "-m"])
        .arg(fixture())
        .args(["--port", &port.to_string(), "--max-model-len", "256", "--kv-cache-tokens", "2048"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting ferrum serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[server] {line}");
            let _ = tx.send(line);
        }
    });
    let t = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60).saturating_sub(t.elapsed())).expect("the server did not report ready");
        if line.contains("ready on") {
            break;
        }
    }
    (server, format!("http://127.0.0.1:{port}"))
}

fn bench(url: &str, extra: &[&str], json: &PathBuf) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum"))
        .args(["bench", "serve", "--base-url", url, "--input-len", "16", "--output-len", "8"])
        .args(["--token-id-min", "10", "--token-id-max", "500", "--request-timeout", "60", "--max-duration", "120"])
        .args(extra)
        .arg("--result-json")
        .arg(json)
        .output()
        .expect("running ferrum bench serve");
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn tmp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrum-bench-serve-{}-{name}.json", std::process::id()))
}

#[test]
fn closed_loop_and_poisson_runs_against_ferrum_serve() {
    let (_server, url) = start_server();

    let json = tmp_json("closed");
    let out = bench(&url, &["--num-prompts", "8", "--concurrency", "4", "--warmup", "2"], &json);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("| TTFT |"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["successful"], 8, "{v}");
    assert_eq!(v["failed"], 0);
    assert_eq!(v["total_output_tokens"], 64);
    assert_eq!(v["total_input_tokens"], 8 * 16);
    for k in ["duration_s", "request_throughput", "output_throughput", "mean_ttft_ms", "median_tpot_ms", "p90_itl_ms", "p99_e2el_ms"] {
        assert!(v[k].as_f64().is_some_and(|x| x >= 0.0), "{k} missing: {v}");
    }
    assert!(v["ttft_ms"]["p99"].as_f64().unwrap() >= v["ttft_ms"]["median"].as_f64().unwrap());
    assert!(v["output_throughput"].as_f64().unwrap() > 0.0);

    let json = tmp_json("poisson");
    let out = bench(&url, &["--num-prompts", "6", "--request-rate", "50", "--seed", "3"], &json);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["successful"], 6, "{v}");
    assert_eq!(v["total_output_tokens"], 48);
    assert_eq!(v["request_rate"], 50.0);
}

#[test]
fn dead_server_fails_fast_naming_the_url() {
    let port = free_port(); // bound then released: nothing listens there
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let out = bench(&url, &["--num-prompts", "4"], &tmp_json("dead"));
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
}
