//! The serving path end to end on the fixture model: concurrency,
//! prefix caching and client disconnects, observed through HTTP and /metrics.

mod support;

use serde_json::{json, Value};
use support::*;

/// Streams a greedy completion of `prompt`; returns the generated text and
/// the finish reason, checking the SSE framing on the way.
fn stream_completion(addr: std::net::SocketAddr, prompt: &[u32], max_tokens: usize) -> (String, Vec<f64>, String) {
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

#[test]
fn sixteen_concurrent_streams_match_alone() {
    let lens = [1usize, 7, 16, 45, 3, 100, 17, 33, 130, 9, 64, 2, 180, 31, 15, 75];
    let reqs: Vec<(Vec<u32>, usize)> = lens.iter().enumerate().map(|(i, &l)| (tokens(l, i as u32), 5 + (i * 7) % 30)).collect();
    let alone_srv = TestServer::fixture(64);
    let alone: Vec<_> = reqs.iter().map(|(p, m)| stream_completion(alone_srv.addr, p, *m)).collect();
    alone_srv.shutdown().unwrap();

    // 40 blocks (640 tokens) for ~1,100 tokens of demand: some preemption.
    let srv = TestServer::fixture(40);
    let addr = srv.addr;
    let handles: Vec<_> = reqs.iter().cloned().map(|(p, m)| std::thread::spawn(move || stream_completion(addr, &p, m))).collect();
    let together: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} differs when run with 15 others");
        assert_eq!(t.2, "length");
    }
    eventually("engine idle", || metric(addr, "ferrum_num_requests_running") == 0.0);
    assert_eq!(metric(addr, "ferrum_kv_cache_blocks_used"), 0.0);
    assert_eq!(metric(addr, "ferrum_num_requests_waiting"), 0.0);
    let cached = metric(addr, "ferrum_kv_cache_blocks_cached");
    assert!(cached <= metric(addr, "ferrum_kv_cache_blocks_total"));
    srv.engine_check().unwrap();
    assert_eq!(metric(addr, "ferrum_requests_total{finish_reason=\"length\"}"), 16.0);
    srv.shutdown().unwrap();
}

#[test]
fn shared_prefix_prefills_only_new_tokens() {
    let shared = tokens(200, 77);
    let mut a = shared.clone();
    a.extend(tokens(12, 78));
    let mut b = shared.clone();
    b.extend(tokens(9, 79));

    let cold = TestServer::fixture(64);
    let b_cold = stream_completion(cold.addr, &b, 10);
    cold.shutdown().unwrap();

    let srv = TestServer::fixture(64);
    let addr = srv.addr;
    let p0 = metric(addr, "ferrum_prefill_tokens_total");
    stream_completion(addr, &a, 10);
    let p1 = metric(addr, "ferrum_prefill_tokens_total");
    let h1 = metric(addr, "ferrum_prefix_cache_hit_tokens_total");
    let b_warm = stream_completion(addr, &b, 10);
    let p2 = metric(addr, "ferrum_prefill_tokens_total");
    let h2 = metric(addr, "ferrum_prefix_cache_hit_tokens_total");
    assert_eq!(p1 - p0, 212.0);
    // 200 shared tokens = 12 full blocks of 16 (192 tokens) reused.
    assert_eq!(h2 - h1, 192.0);
    assert_eq!(p2 - p1, (209 - 192) as f64, "the second request prefills only what the cache lacks");
    assert_eq!(b_warm, b_cold, "same output with and without the cache");
    // usage reports the cached tokens too.
    let r = post(addr, "/v1/completions", &json!({"prompt": b, "max_tokens": 2, "temperature": 0}));
    assert_eq!(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"], 208);
    srv.shutdown().unwrap();
}

#[test]
fn disconnect_mid_stream_frees_blocks() {
    let srv = TestServer::fixture(512);
    let addr = srv.addr;
    // 16 choices x 240 tokens is far more work than the few ms the client reads.
    let body = json!({"prompt": tokens(10, 5), "max_tokens": 240, "n": 16, "temperature": 0.8, "seed": 1, "ignore_eos": true, "stream": true});
    let mut cut_short = false;
    for _ in 0..3 {
        let g0 = metric(addr, "ferrum_generation_tokens_total");
        let d0 = metric(addr, "ferrum_client_disconnects_total");
        stream_then_disconnect(addr, "/v1/completions", &body, 20);
        eventually("blocks freed after the disconnect", || metric(addr, "ferrum_num_requests_running") == 0.0 && metric(addr, "ferrum_kv_cache_blocks_used") == 0.0);
        let generated = metric(addr, "ferrum_generation_tokens_total") - g0;
        if generated < 16.0 * 240.0 {
            cut_short = true;
            eventually("disconnects counted", || metric(addr, "ferrum_client_disconnects_total") - d0 == 16.0);
            break;
        }
    }
    assert!(cut_short, "the request always finished before the client went away");
    srv.engine_check().unwrap();
    // The server still serves.
    let r = post(addr, "/v1/completions", &json!({"prompt": [5, 6], "max_tokens": 2}));
    assert_eq!(r.status, 200);
    srv.shutdown().unwrap();
}
