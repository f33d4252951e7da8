//! Test support: the fixture model (or the real default model) behind an
//! in-process server, a tiny blocking HTTP/1.1 client (enough for JSON, SSE
//! and cut connections), and the streaming checks the concurrency tests share.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrum_engine::runner::{Engine, EngineConfig};
use ferrum_kernels::CpuBackend;
use ferrum_model::load::ModelFile;
use ferrum_server::{Loader, ModelBundle, RunningServer, ServerConfig};
use ferrum_text::{ChatTemplate, Tokenizer};
use serde_json::{json, Value};

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2/model-q8_0.gguf")
}

pub const MODEL: &str = "fixture-qwen2";

/// The real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M):
/// $FERRUM_DEFAULT_MODEL, else the Ferrum cache. `None` (skip) only when it is
/// absent and FERRUM_SKIP_MODEL_TESTS=1; absent otherwise fails with how to
/// fetch it.
pub fn default_model() -> Option<PathBuf> {
    let p = std::env::var_os("FERRUM_DEFAULT_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: default model not found at {} (FERRUM_SKIP_MODEL_TESTS=1)", p.display());
        return None;
    }
    panic!("default model missing at {}: run scripts/fetch-default-model.sh (or set FERRUM_DEFAULT_MODEL, or FERRUM_SKIP_MODEL_TESTS=1 to skip)", p.display());
}

/// A loader of the fixture model (context 256) with `n_blocks` KV blocks
/// and an optional chat template.
pub fn loader(n_blocks: usize, template: Option<&str>, delay: Duration) -> Loader {
    let cfg = EngineConfig { max_num_batched_tokens: 128, n_blocks, ..EngineConfig::new(256, 0) };
    gguf_loader(fixture(), cfg, template, delay)
}

/// A loader of the GGUF model at `path` on the CPU backend, served as `MODEL`.
pub fn gguf_loader(path: PathBuf, cfg: EngineConfig, template: Option<&str>, delay: Duration) -> Loader {
    let template = template.map(str::to_string);
    Box::new(move || {
        std::thread::sleep(delay);
        let file = ModelFile::open(&path).map_err(|e| e.to_string())?;
        let tok = match &file {
            ModelFile::Gguf(g) => Tokenizer::from_gguf(g).map_err(|e| e.to_string())?,
            ModelFile::Hf { .. } => return Err("expected a GGUF fixture".into()),
        };
        let model = file.load(CpuBackend, &mut |_, _| {}).map_err(|e| e.to_string())?;
        let engine = Engine::start(model, tok.eos_ids().to_vec(), cfg).map_err(|e| e.to_string())?;
        let template = match template {
            Some(t) => Some(ChatTemplate::new(t).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(ModelBundle { engine, tokenizer: tok, template, names: vec![MODEL.to_string()], load_time: Duration::ZERO })
    })
}

/// A server on a free loopback port, on its own runtime.
pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(cfg_edit: impl FnOnce(&mut ServerConfig), loader: Loader) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut cfg = ServerConfig::new("127.0.0.1", 0, MODEL);
        cfg.announce = false;
        cfg_edit(&mut cfg);
        let server = rt.block_on(ferrum_server::start(cfg, loader)).unwrap();
        let addr = server.addr;
        TestServer { rt, server: Some(server), addr }
    }

    pub fn fixture(n_blocks: usize) -> TestServer {
        Self::ready(loader(n_blocks, None, Duration::ZERO))
    }

    /// A default-config server on `loader`, once its model is loaded.
    pub fn ready(loader: Loader) -> TestServer {
        let s = Self::start(|_| {}, loader);
        s.wait_ready();
        s
    }

    pub fn wait_ready(&self) {
        let srv = self.server.as_ref().unwrap();
        self.rt.block_on(srv.ready()).unwrap();
    }

    pub fn engine_check(&self) -> Result<(), String> {
        let b = self.server.as_ref().unwrap().state.bundle().unwrap();
        b.engine.check_invariants()
    }

    pub fn shutdown(mut self) -> Result<(), String> {
        let srv = self.server.take().unwrap();
        srv.shutdown();
        self.rt.block_on(srv.wait()).map_err(|e| e.to_string())
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        self.text().lines().filter_map(|l| l.strip_prefix("data: ").map(str::to_string)).collect()
    }
}

fn request_bytes(method: &str, path: &str, body: &[u8], extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&request_bytes(method, path, body, headers)).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> HttpResponse {
    request(addr, "POST", path, body.to_string().as_bytes(), &[])
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, b"", &[])
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

/// Opens a streaming request, reads until `n` `data:` events arrived, then
/// drops the connection.
pub fn stream_then_disconnect(addr: SocketAddr, path: &str, body: &Value, n: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request_bytes("POST", path, body.to_string().as_bytes(), &[])).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < n {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "the server closed the stream early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..k]);
    }
    drop(s);
}

/// A metric's value from `/metrics` (first sample line starting with `name`).
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')).and_then(|r| r.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Polls until `f()` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

/// Deterministic pseudo-random token ids in 3..503.
pub fn tokens(len: usize, seed: u32) -> Vec<u32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(99);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            3 + x % 500
        })
        .collect()
}

/// What a client saw of one streamed completion: text, per-token logprobs
/// and the finish reason.
pub type Streamed = (String, Vec<f64>, String);

/// Streams a greedy completion of the token ids `prompt` (ignoring EOS, with
/// logprobs), checking the SSE framing on the way.
pub fn stream_completion(addr: SocketAddr, prompt: &[u32], max_tokens: usize) -> Streamed {
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": true, "logprobs": 0});
    let r = post(addr, "/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.to_ascii_lowercase().contains("text/event-stream"));
    let data = r.sse_data();
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1, "exactly one [DONE]");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut lps = Vec::new();
    let mut finish = String::new();
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        let c = &v["choices"][0];
        text.push_str(c["text"].as_str().unwrap());
        if let Some(l) = c["logprobs"]["token_logprobs"].as_array() {
            lps.extend(l.iter().map(|x| x.as_f64().unwrap()));
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert_eq!(lps.len(), max_tokens);
    (text, lps, finish)
}

/// Streams each `(prompt, max_tokens)` alone, one after another.
pub fn stream_one_by_one(addr: SocketAddr, reqs: &[(Vec<u32>, usize)]) -> Vec<Streamed> {
    reqs.iter().map(|(p, m)| stream_completion(addr, p, *m)).collect()
}

/// Streams every `(prompt, max_tokens)` at once, one client thread each.
pub fn stream_concurrently(addr: SocketAddr, reqs: &[(Vec<u32>, usize)]) -> Vec<Streamed> {
    let handles: Vec<_> = reqs.iter().cloned().map(|(p, m)| std::thread::spawn(move || stream_completion(addr, &p, m))).collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every concurrent output equals the same request's output alone, and
/// ended by length.
pub fn assert_same_as_alone(alone: &[Streamed], together: &[Streamed]) {
    assert_eq!(alone.len(), together.len());
    for (i, (a, t)) in alone.iter().zip(together).enumerate() {
        assert_eq!(a, t, "request {i} differs when run with {} others", together.len() - 1);
        assert_eq!(t.2, "length");
    }
}

/// After the traffic: the engine goes idle, every KV block is free or
/// cached (none used), nothing waits, the scheduler's and block manager's
/// invariants hold, and `length_finishes` choices ended by length.
pub fn assert_engine_idle(srv: &TestServer, length_finishes: usize) {
    let addr = srv.addr;
    eventually("engine idle", || metric(addr, "ferrum_num_requests_running") == 0.0);
    assert_eq!(metric(addr, "ferrum_kv_cache_blocks_used"), 0.0);
    assert_eq!(metric(addr, "ferrum_num_requests_waiting"), 0.0);
    let cached = metric(addr, "ferrum_kv_cache_blocks_cached");
    assert!(cached <= metric(addr, "ferrum_kv_cache_blocks_total"));
    srv.engine_check().unwrap();
    assert_eq!(metric(addr, "ferrum_requests_total{finish_reason=\"length\"}"), length_finishes as f64);
}

/// Text and token logprobs of each choice of a non-streaming completion.
pub fn choices(v: &Value) -> Vec<(String, Vec<f64>)> {
    v["choices"]
        .as_array()
        .unwrap_or_else(|| panic!("no choices in {v}"))
        .iter()
        .map(|c| {
            let lps = c["logprobs"]["token_logprobs"].as_array().map_or(Vec::new(), |l| l.iter().map(|x| x.as_f64().unwrap()).collect());
            (c["text"].as_str().unwrap().to_string(), lps)
        })
        .collect()
}
