//! The HTTP API on the fixture model: response shapes, errors, auth,
//! loading, shutdown.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const TEMPLATE: &str = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

fn error_of(r: &HttpResponse) -> Value {
    let v = r.json();
    let e = v["error"].clone();
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    e
}

#[test]
fn bad_requests_get_openai_errors() {
    let srv = TestServer::start(|c| c.max_body_bytes = 64 << 10, loader(64, Some(TEMPLATE), Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let raw = |path: &str, body: &str| request(a, "POST", path, body.as_bytes(), &[]);
    let cases: Vec<(HttpResponse, u16, Option<&str>)> = vec![
        (raw("/v1/completions", "{not json"), 400, None),
        (raw("/v1/chat/completions", "[1, 2]"), 400, None),
        (raw("/v1/chat/completions", ""), 400, None),
        (post(a, "/v1/chat/completions", &json!({"messages": []})), 400, Some("messages")),
        (post(a, "/v1/chat/completions", &json!({"messages": "hi"})), 400, Some("messages")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user"}]})), 400, Some("messages[0].content")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": 3, "content": "x"}]})), 400, Some("messages[0].role")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "n": 0})), 400, Some("n")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "n": 1000})), 400, Some("n")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1})), 400, Some("max_tokens")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0})), 400, Some("max_completion_tokens")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})), 400, Some("temperature")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})), 400, Some("top_logprobs")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})), 400, Some("top_logprobs")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999": 1}})), 400, Some("logit_bias")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})), 400, Some("stream")),
        (post(a, "/v1/chat/completions", &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})), 404, Some("model")),
        (post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x ".repeat(300)}]})), 400, Some("messages")),
        (post(a, "/v1/completions", &json!({"prompt": tokens(256, 1)})), 400, Some("prompt")),
        (post(a, "/v1/completions", &json!({"prompt": [1, -2]})), 400, Some("prompt")),
        (post(a, "/v1/completions", &json!({"prompt": [[1], "a"]})), 400, Some("prompt")),
        (post(a, "/v1/completions", &json!({"prompt": [1], "logprobs": 50})), 400, Some("logprobs")),
        (post(a, "/v1/completions", &json!({"max_tokens": 3})), 400, Some("prompt")),
        (post(a, "/v1/completions", &json!({"prompt": "x", "stop": [1]})), 400, Some("stop")),
        (post(a, "/v1/completions", &json!({"prompt": "x", "top_p": 0})), 400, Some("top_p")),
        (post(a, "/v1/completions", &json!({"prompt": "x", "presence_penalty": 3})), 400, Some("presence_penalty")),
        (post(a, "/v1/completions", &json!({"prompt": "x", "top_k": -5})), 400, Some("top_k")),
        (raw("/v1/completions", &format!("{{\"prompt\": \"{}\"}}", "a".repeat(70 << 10))), 413, None),
        (get(a, "/v1/nothing"), 404, None),
        (get(a, "/v1/completions"), 405, None),
    ];
    for (i, (r, status, param)) in cases.iter().enumerate() {
        assert_eq!(r.status, *status, "case {i}: {}", r.text());
        let e = error_of(r);
        if let Some(p) = param {
            assert_eq!(e["param"], json!(p), "case {i}: {e}");
        }
    }
    // The prompt-too-long error says so.
    let e = error_of(&cases[18].0);
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(e["message"].as_str().unwrap().contains("256"), "{e}");
    // A too-long max_tokens is clamped to the context, not refused.
    let r = post(a, "/v1/completions", &json!({"prompt": tokens(250, 2), "max_tokens": 100000, "ignore_eos": true}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["completion_tokens"], 6);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    srv.shutdown().unwrap();
}

#[test]
fn chat_completion_shapes() {
    let srv = TestServer::start(|_| {}, loader(64, Some(TEMPLATE), Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let msgs = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello"}]}]);
    let r = post(a, "/v1/chat/completions", &json!({"model": MODEL, "messages": msgs, "max_tokens": 6, "n": 2, "seed": 9, "logprobs": true, "top_logprobs": 2, "ignore_eos": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"].is_string());
        assert_eq!(c["finish_reason"], "length");
        let lp = c["logprobs"]["content"].as_array().unwrap();
        assert_eq!(lp.len(), 6);
        assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
        assert!(lp[0]["bytes"].is_array());
    }
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"].as_u64().unwrap() + 12);
    // Same seed, same answers.
    let again = post(a, "/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 6, "n": 2, "seed": 9, "ignore_eos": true})).json();
    for i in 0..2 {
        assert_eq!(again["choices"][i]["message"]["content"], v["choices"][i]["message"]["content"]);
    }

    // Streaming with usage.
    let r = post(a, "/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}, "temperature": 0, "ignore_eos": true}));
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    let finish: Vec<_> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["length"]);
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    let whole = post(a, "/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 5, "temperature": 0, "ignore_eos": true})).json();
    assert_eq!(whole["choices"][0]["message"]["content"].as_str().unwrap(), streamed);
    srv.shutdown().unwrap();
}

#[test]
fn completions_stop_echo_and_lists() {
    let srv = TestServer::fixture(64);
    let a = srv.addr;
    let base = post(a, "/v1/completions", &json!({"prompt": "hello", "max_tokens": 12, "temperature": 0, "ignore_eos": true})).json();
    let text = base["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.chars().count() >= 4, "{text:?}");
    // A stop string taken from the middle of the greedy output cuts it there.
    let stop: String = text.chars().skip(2).take(2).collect();
    let r = post(a, "/v1/completions", &json!({"prompt": "hello", "max_tokens": 12, "temperature": 0, "ignore_eos": true, "stop": [stop.clone()]})).json();
    let cut = r["choices"][0]["text"].as_str().unwrap();
    assert_eq!(cut, &text[..text.find(&stop).unwrap()]);
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    // Echo with logprobs: the prompt's tokens come first, the first without a score.
    let r = post(a, "/v1/completions", &json!({"prompt": "hello", "max_tokens": 3, "temperature": 0, "echo": true, "logprobs": 1, "ignore_eos": true})).json();
    let c = &r["choices"][0];
    assert!(c["text"].as_str().unwrap().starts_with("hello"));
    let lps = c["logprobs"]["token_logprobs"].as_array().unwrap();
    let n_prompt = r["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(lps.len(), n_prompt + 3);
    assert!(lps[0].is_null());
    assert!(lps[1..].iter().all(|x| x.as_f64().unwrap() <= 0.0));
    // A list of token-id prompts gives prompt-major choices.
    let r = post(a, "/v1/completions", &json!({"prompt": [[5, 6, 7], [8, 9]], "n": 2, "max_tokens": 2, "temperature": 0, "ignore_eos": true})).json();
    let ch = r["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 4);
    assert_eq!(ch[0]["text"], ch[1]["text"]);
    assert_eq!(ch[2]["text"], ch[3]["text"]);
    assert_eq!(r["usage"]["prompt_tokens"], 5);
    // A list of strings.
    let r = post(a, "/v1/completions", &json!({"prompt": ["ab", "cd"], "max_tokens": 2})).json();
    assert_eq!(r["choices"].as_array().unwrap().len(), 2);
    srv.shutdown().unwrap();
}

#[test]
fn api_key_guards_v1_only() {
    let srv = TestServer::start(|c| c.api_key = Some("s3cret".into()), loader(64, None, Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let body = json!({"prompt": [5], "max_tokens": 1}).to_string();
    let r = request(a, "POST", "/v1/completions", body.as_bytes(), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r)["code"], "invalid_api_key");
    let r = request(a, "POST", "/v1/completions", body.as_bytes(), &[("Authorization", "Bearer wrong")]);
    assert_eq!(r.status, 401);
    let r = request(a, "POST", "/v1/completions", body.as_bytes(), &[("Authorization", "Bearer s3cret")]);
    assert_eq!(r.status, 200);
    assert_eq!(request(a, "GET", "/v1/models", b"", &[]).status, 401);
    let models = request(a, "GET", "/v1/models", b"", &[("Authorization", "Bearer s3cret")]).json();
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(get(a, "/health").status, 200);
    assert_eq!(get(a, "/metrics").status, 200);
    srv.shutdown().unwrap();
}

#[test]
fn health_is_503_while_loading() {
    let srv = TestServer::start(|_| {}, loader(64, None, Duration::from_millis(700)));
    let a = srv.addr;
    let r = get(a, "/health");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "loading");
    let r = post(a, "/v1/completions", &json!({"prompt": [5], "max_tokens": 1}));
    assert_eq!(r.status, 503);
    error_of(&r);
    srv.wait_ready();
    assert_eq!(get(a, "/health").status, 200);
    srv.shutdown().unwrap();
}

#[test]
fn shutdown_finishes_in_flight_then_stops() {
    let srv = TestServer::start(|c| c.shutdown_timeout = Duration::from_secs(20), loader(512, None, Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let body = json!({"prompt": tokens(10, 3), "max_tokens": 200, "n": 8, "ignore_eos": true, "stream": true});
    let client = std::thread::spawn(move || post(a, "/v1/completions", &body));
    eventually("the request is running", || metric(a, "ferrum_num_requests_running") > 0.0 || client.is_finished());
    let t = std::time::Instant::now();
    srv.shutdown().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15), "shutdown took {:?}", t.elapsed());
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let finishes = data.iter().filter(|d| d.contains("\"finish_reason\":\"length\"")).count();
    assert_eq!(finishes, 8, "every choice ran to its end");
    assert!(std::net::TcpStream::connect(a).is_err(), "still accepting after shutdown");
}

#[test]
fn shutdown_deadline_cancels_in_flight() {
    let srv = TestServer::start(|c| c.shutdown_timeout = Duration::from_millis(1), loader(512, None, Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let body = json!({"prompt": tokens(10, 3), "max_tokens": 240, "n": 16, "ignore_eos": true, "stream": true});
    let client = std::thread::spawn(move || post(a, "/v1/completions", &body));
    eventually("the request is running", || metric(a, "ferrum_num_requests_running") > 0.0 || client.is_finished());
    srv.shutdown().unwrap();
    let r = client.join().unwrap();
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]", "the stream ends cleanly");
}

#[test]
fn thinking_template_splits_reasoning() {
    let tmpl = "{% for m in messages %}{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}";
    let srv = TestServer::start(|_| {}, loader(64, Some(tmpl), Duration::ZERO));
    srv.wait_ready();
    let a = srv.addr;
    let msgs = json!([{"role": "user", "content": "why?"}]);
    let base = json!({"messages": msgs, "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    // The generation prompt opened <think>: everything is reasoning until </think>.
    let v = post(a, "/v1/chat/completions", &base).json();
    let m = &v["choices"][0]["message"];
    let reasoning = m["reasoning_content"].as_str().unwrap().to_string();
    assert!(!reasoning.is_empty(), "{v}");
    assert_eq!(m["content"], "");
    let mut streamed = base.clone();
    streamed["stream"] = json!(true);
    let data = post(a, "/v1/chat/completions", &streamed).sse_data();
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let r: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert_eq!(r, reasoning);
    // enable_thinking = false: plain content.
    let mut off = base.clone();
    off["chat_template_kwargs"] = json!({"enable_thinking": false});
    let v = post(a, "/v1/chat/completions", &off).json();
    let m = &v["choices"][0]["message"];
    assert!(m.get("reasoning_content").is_none(), "{v}");
    assert!(!m["content"].as_str().unwrap().is_empty());
    srv.shutdown().unwrap();
}

#[test]
fn sampling_fields_reach_the_sampler() {
    let srv = TestServer::fixture(64);
    let a = srv.addr;
    let ids = |v: &Value| -> Vec<String> { v["choices"][0]["logprobs"]["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect() };
    // A large logit bias forces one token.
    let v = post(a, "/v1/completions", &json!({"prompt": [5, 6], "max_tokens": 4, "temperature": 0, "logprobs": 0, "logit_bias": {"65": 100}})).json();
    let t = ids(&v);
    assert_eq!(t.len(), 4);
    assert!(t.iter().all(|x| x == &t[0]), "{t:?}");
    // top_k = 1 is greedy whatever the temperature.
    let greedy = post(a, "/v1/completions", &json!({"prompt": [5, 6], "max_tokens": 6, "temperature": 0, "logprobs": 0, "ignore_eos": true})).json();
    let k1 = post(a, "/v1/completions", &json!({"prompt": [5, 6], "max_tokens": 6, "temperature": 1.5, "top_k": 1, "logprobs": 0, "ignore_eos": true, "seed": 3})).json();
    assert_eq!(ids(&greedy), ids(&k1));
    // A strong frequency penalty changes greedy output that repeats.
    let pen = post(a, "/v1/completions", &json!({"prompt": [5, 6], "max_tokens": 6, "temperature": 0, "logprobs": 0, "ignore_eos": true, "frequency_penalty": 2, "presence_penalty": 2, "repetition_penalty": 1.3, "min_p": 0.1})).json();
    assert_eq!(pen["choices"][0]["finish_reason"], "length");
    srv.shutdown().unwrap();
}
