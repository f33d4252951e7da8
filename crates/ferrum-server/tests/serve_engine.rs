//! The serving path end to end on the fixture model: concurrency, `n > 1`
//! sharing one prefill, prefix caching and client disconnects, observed
//! through HTTP and /metrics.

mod support;

use serde_json::json;
use support::*;

#[test]
fn sixteen_concurrent_streams_match_alone() {
    let lens = [1usize, 7, 16, 45, 3, 100, 17, 33, 130, 9, 64, 2, 180, 31, 15, 75];
    let reqs: Vec<(Vec<u32>, usize)> = lens.iter().enumerate().map(|(i, &l)| (tokens(l, i as u32), 5 + (i * 7) % 30)).collect();
    let alone_srv = TestServer::fixture(64);
    let alone = stream_one_by_one(alone_srv.addr, &reqs);
    alone_srv.shutdown().unwrap();

    // 40 blocks (640 tokens) for ~1,100 tokens of demand: some preemption.
    let srv = TestServer::fixture(40);
    let together = stream_concurrently(srv.addr, &reqs);
    assert_same_as_alone(&alone, &together);
    assert_engine_idle(&srv, 16);
    assert!(metric(srv.addr, "ferrum_preemptions_total") > 0.0);
    srv.shutdown().unwrap();
}

#[test]
fn n_choices_share_one_prefill() {
    // 70 tokens: 4 full blocks and a partial one the choices share, then copy.
    let p = tokens(70, 31);
    let greedy = |n: usize| json!({"prompt": p, "n": n, "max_tokens": 20, "temperature": 0, "ignore_eos": true, "logprobs": 0});
    let one_srv = TestServer::fixture(64);
    let one = choices(&post(one_srv.addr, "/v1/completions", &greedy(1)).json());
    one_srv.shutdown().unwrap();

    let srv = TestServer::fixture(64);
    let addr = srv.addr;
    let p0 = metric(addr, "ferrum_prefill_tokens_total");
    let r = post(addr, "/v1/completions", &greedy(3));
    assert_eq!(r.status, 200, "{}", r.text());
    let three = choices(&r.json());
    assert_eq!(three.len(), 3);
    for (i, c) in three.iter().enumerate() {
        assert_eq!(c, &one[0], "greedy choice {i} differs from n = 1");
    }
    assert_eq!(metric(addr, "ferrum_prefill_tokens_total") - p0, 70.0, "the prompt is computed once for all choices");
    assert_eq!(r.json()["usage"]["prompt_tokens"], 70);
    assert_eq!(r.json()["usage"]["completion_tokens"], 60);

    // Sampled with a seed: the choices differ, and a repeat reproduces them.
    let sampled = json!({"prompt": p, "n": 3, "max_tokens": 20, "temperature": 0.9, "seed": 5, "ignore_eos": true, "logprobs": 0});
    let a = choices(&post(addr, "/v1/completions", &sampled).json());
    assert!(a[0] != a[1] && a[0] != a[2] && a[1] != a[2], "{a:?}");
    let b = choices(&post(addr, "/v1/completions", &sampled).json());
    assert_eq!(a, b);
    assert_engine_idle(&srv, 9);
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
