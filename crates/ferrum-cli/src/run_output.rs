//! What `ferrum run` reports besides the streamed text: the `--json`
//! object, `--logprobs` tables and the speed line on stderr.

use ferrum_text::Tokenizer;
use serde_json::{json, Value};

use crate::session::Generation;

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// The `--json` object: ids, text, per-step top-K logprobs, finish reason, timings.
pub fn json(prompt: &[u32], g: &Generation, load_s: f64, with_logprobs: bool) -> Value {
    let mut v = json!({
        "prompt_tokens": prompt,
        "completion_tokens": g.completion,
        "text": g.text,
        "finish_reason": g.finish.reason(),
        "seed": g.seed,
        "usage": {"prompt_tokens": prompt.len(), "completion_tokens": g.completion.len()},
        "timings": {
            "load_s": load_s,
            "prefill_tokens": g.prefilled,
            "prefill_s": g.prefill_s,
            "prefill_tokens_per_s": rate(g.prefilled, g.prefill_s),
            "decode_tokens": g.decode_steps,
            "decode_s": g.decode_s,
            "decode_tokens_per_s": rate(g.decode_steps, g.decode_s),
        },
    });
    if with_logprobs {
        let top: Vec<Value> = g
            .steps
            .iter()
            .map(|s| {
                s.top
                    .iter()
                    .map(|t| json!({"id": t.id, "logprob": t.logprob}))
                    .collect()
            })
            .collect();
        let chosen: Vec<f32> = g.steps.iter().map(|s| s.logprob).collect();
        v["logprobs"] = Value::Array(top);
        v["token_logprobs"] = json!(chosen);
    }
    v
}

/// One line per generated token on stderr: the token, its logprob, the top K.
pub fn print_logprobs(tok: &Tokenizer, g: &Generation) {
    let show = |id: u32| {
        format!(
            "{:?}",
            String::from_utf8_lossy(&tok.token_bytes(id).unwrap_or_default())
        )
    };
    eprintln!("logprobs:");
    for s in &g.steps {
        let top: Vec<String> = s
            .top
            .iter()
            .map(|t| format!("{} {:.3}", show(t.id), t.logprob))
            .collect();
        eprintln!(
            "  {:>8} {:<16} {:>8.4}  | {}",
            s.id,
            show(s.id),
            s.logprob,
            top.join(", ")
        );
    }
}

/// The speed line on stderr.
pub fn print_stats(g: &Generation) {
    let reused = if g.reused > 0 {
        format!(" ({} reused)", g.reused)
    } else {
        String::new()
    };
    eprintln!(
        "prefill: {} tokens{reused}, {:.1} tok/s; decode: {} tokens, {:.1} tok/s; finish: {}",
        g.prefilled,
        rate(g.prefilled, g.prefill_s),
        g.completion.len(),
        rate(g.decode_steps, g.decode_s),
        g.finish.reason()
    );
}
