//! One streamed `/v1/completions` request: sends it, reads its SSE events
//! until `[DONE]`, and times the first token and the gaps between tokens.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::client::{Endpoint, LineSplitter};

/// One prompt of the run.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// The "prompt" field: a token-id array or a string.
    pub value: Value,
    /// Prompt tokens when known without the server (token-id prompts).
    pub len: Option<usize>,
    pub max_tokens: usize,
    /// Sampling temperature sent with the request (0: greedy).
    pub temperature: f64,
}

/// What one request measured; times in seconds.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft: f64,
    /// Gaps between successive token-carrying chunks.
    pub itl: Vec<f64>,
    pub e2e: f64,
}

impl Outcome {
    pub fn failed(error: String) -> Self {
        Outcome { error: Some(error), ..Default::default() }
    }
}

pub fn body(model: &str, p: &Prompt) -> Vec<u8> {
    json!({
        "model": model,
        "prompt": p.value,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
    .into_bytes()
}

/// Runs one request with a time limit; failures come back as an [`Outcome`] with `error` set.
pub async fn send(ep: &Endpoint, api_key: Option<&str>, model: &str, p: &Prompt, limit: Duration) -> Outcome {
    match tokio::time::timeout(limit, stream(ep, api_key, model, p)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::failed(format!("{e:#}")),
        Err(_) => Outcome::failed(format!("request to {} timed out after {:.1} s", ep.url, limit.as_secs_f64())),
    }
}

async fn stream(ep: &Endpoint, api_key: Option<&str>, model: &str, p: &Prompt) -> Result<Outcome> {
    let body = body(model, p);
    let t0 = Instant::now();
    let mut resp = ep.request("POST", "/v1/completions", Some(&body), api_key).await?;
    if resp.status != 200 {
        let text = resp.error_text().await;
        bail!("POST {}/v1/completions: HTTP {}: {text}", ep.url, resp.status);
    }
    let mut lines = LineSplitter::default();
    // Seconds since the request was sent at which each token-carrying chunk arrived.
    let mut times = Vec::new();
    let (mut usage_out, mut usage_prompt) = (None, None);
    'read: while let Some(bytes) = resp.next_bytes().await? {
        for line in lines.push(&bytes) {
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                break 'read;
            }
            let v: Value = serde_json::from_str(data).with_context(|| format!("malformed SSE event `{}`", short(data)))?;
            if let Some(err) = v.get("error") {
                bail!("server error in stream: {err}");
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                usage_out = u.get("completion_tokens").and_then(Value::as_u64).or(usage_out);
                usage_prompt = u.get("prompt_tokens").and_then(Value::as_u64).or(usage_prompt);
            }
            if carries_tokens(&v) {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let e2e = t0.elapsed().as_secs_f64();
    let output_tokens = usage_out.map(|n| n as usize).unwrap_or(times.len());
    if output_tokens == 0 {
        return Err(anyhow!("the stream carried no output tokens"));
    }
    let ttft = times.first().copied().unwrap_or(e2e);
    let itl = times.windows(2).map(|w| w[1] - w[0]).collect();
    let prompt_tokens = usage_prompt.map(|n| n as usize).or(p.len).unwrap_or(0);
    Ok(Outcome { error: None, prompt_tokens, output_tokens, ttft, itl, e2e })
}

/// A chunk carries output when some choice has non-empty text (or token ids).
fn carries_tokens(v: &Value) -> bool {
    let Some(choices) = v.get("choices").and_then(Value::as_array) else { return false };
    choices.iter().any(|c| {
        c.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty())
            || c.get("token_ids").and_then(Value::as_array).is_some_and(|t| !t.is_empty())
    })
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chunks_are_recognised() {
        assert!(carries_tokens(&json!({"choices": [{"text": "a"}]})));
        assert!(!carries_tokens(&json!({"choices": [{"text": ""}]})));
        assert!(!carries_tokens(&json!({"choices": [], "usage": {"completion_tokens": 3}})));
    }
}
