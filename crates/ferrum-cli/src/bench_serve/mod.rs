//! `ferrum bench serve`: a load generator for any OpenAI-compatible server
//! (Ferrum, llama-server, vLLM). Streams `/v1/completions` requests, closed
//! loop at `--concurrency C` or open loop at `--request-rate R` (seeded Poisson
//! arrivals), and reports throughput and TTFT / TPOT / ITL / end-to-end latency.
//!
//! Bounded: `--num-prompts` requests, each under `--request-timeout`, the whole
//! run under `--max-duration`; it only contacts `--base-url`.

mod client;
mod report;
mod request;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use client::Endpoint;
use report::{Report, RunConfig};
use request::{Outcome, Prompt};
use stats::Rng;

/// Largest accepted `--num-prompts` + `--warmup`, `--input-len` and `--output-len`.
const MAX_PROMPTS: usize = 1_000_000;
const MAX_LEN: usize = 1 << 20;
/// Largest accepted dataset file.
const MAX_DATASET_BYTES: u64 = 1 << 30;

#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    /// The server, e.g. http://127.0.0.1:8080 (plain HTTP; a trailing /v1 is allowed).
    #[arg(long)]
    base_url: String,
    /// The "model" field; default: the first id of GET /v1/models, else "default".
    #[arg(long)]
    model: Option<String>,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key: Option<String>,
    /// JSONL prompts, one {"prompt": ...} per line (cycled if fewer than needed);
    /// without it, random token-id prompts.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Prompt tokens of random prompts.
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Output tokens per request (sent as max_tokens with ignore_eos).
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Random lengths are drawn uniformly from len × [1 - r, 1 + r] (input and output).
    #[arg(long, default_value_t = 0.0)]
    range_ratio: f64,
    /// Random prompt token ids are drawn from [MIN, MAX).
    #[arg(long, default_value_t = 1000)]
    token_id_min: u32,
    #[arg(long, default_value_t = 20000)]
    token_id_max: u32,
    /// Timed requests.
    #[arg(long, default_value_t = 100)]
    num_prompts: usize,
    /// Requests in flight (closed loop); with --request-rate, a cap on in-flight requests.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Open loop: Poisson arrivals at R requests per second.
    #[arg(long)]
    request_rate: Option<f64>,
    /// Seed of prompts and arrivals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampling temperature of every request (0: greedy, as serving benchmarks usually run).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Warm-up requests sent one at a time before timing (not counted).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 300.0)]
    request_timeout: f64,
    /// Seconds the whole timed run may take; requests still running are cut off.
    #[arg(long, default_value_t = 3600.0)]
    max_duration: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    result_json: Option<PathBuf>,
}

pub fn run(a: ServeBenchArgs) -> Result<()> {
    validate(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(run_async(a))
}

fn validate(a: &ServeBenchArgs) -> Result<()> {
    if a.num_prompts == 0 || a.num_prompts + a.warmup > MAX_PROMPTS {
        bail!("--num-prompts + --warmup must be in 1..={MAX_PROMPTS} (got {} + {})", a.num_prompts, a.warmup);
    }
    if a.input_len == 0 || a.input_len > MAX_LEN || a.output_len == 0 || a.output_len > MAX_LEN {
        bail!("--input-len and --output-len must be in 1..={MAX_LEN} (got {} and {})", a.input_len, a.output_len);
    }
    if !(0.0..1.0).contains(&a.range_ratio) {
        bail!("--range-ratio must be in [0, 1) (got {})", a.range_ratio);
    }
    if a.token_id_min >= a.token_id_max {
        bail!("--token-id-min {} must be below --token-id-max {}", a.token_id_min, a.token_id_max);
    }
    if a.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    if let Some(r) = a.request_rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--request-rate must be a positive number (got {r})");
        }
    }
    for (name, s) in [("--request-timeout", a.request_timeout), ("--max-duration", a.max_duration)] {
        if !(s.is_finite() && s > 0.0 && s < 1e7) {
            bail!("{name} must be a positive number of seconds (got {s})");
        }
    }
    Ok(())
}

async fn run_async(a: ServeBenchArgs) -> Result<()> {
    let ep = Endpoint::parse(&a.base_url)?;
    let key = a.api_key.as_deref();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => first_model(&ep, key, Duration::from_secs_f64(a.request_timeout.min(30.0))).await?,
    };
    let mut prompts = make_prompts(&a)?;
    let warm = prompts.split_off(a.num_prompts);
    let limit = Duration::from_secs_f64(a.request_timeout);
    for (i, p) in warm.iter().enumerate() {
        if let Some(e) = request::send(&ep, key, &model, p, limit).await.error {
            bail!("warm-up request {} of {} failed: {e}", i + 1, warm.len());
        }
    }

    let outcomes = timed_run(&a, &ep, &model, prompts).await?;
    let duration_s = outcomes.1;
    let config = RunConfig {
        base_url: ep.url.clone(),
        model,
        endpoint: "/v1/completions",
        dataset: a.dataset.as_ref().map(|p| p.display().to_string()),
        num_prompts: a.num_prompts,
        concurrency: if a.request_rate.is_none() { Some(a.concurrency.unwrap_or(1)) } else { a.concurrency },
        request_rate: a.request_rate,
        input_len: a.input_len,
        output_len: a.output_len,
        range_ratio: a.range_ratio,
        seed: a.seed,
        warmup: a.warmup,
    };
    let report = Report::new(config, &outcomes.0, duration_s);
    print!("{}", report.markdown());
    if let Some(path) = &a.result_json {
        let text = serde_json::to_string_pretty(&report.to_json()?)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if report.successful == 0 {
        let first = report.errors.first().cloned().unwrap_or_default();
        bail!("all {} requests to {} failed; first error: {first}", a.num_prompts, ep.url);
    }
    Ok(())
}

/// Runs the timed requests; returns every outcome and the wall time in seconds.
async fn timed_run(a: &ServeBenchArgs, ep: &Endpoint, model: &str, prompts: Vec<Prompt>) -> Result<(Vec<Outcome>, f64)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.max_duration);
    let in_flight = match (a.concurrency, a.request_rate) {
        (Some(c), _) => c,
        (None, Some(_)) => Semaphore::MAX_PERMITS,
        (None, None) => 1,
    };
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut arrivals = Rng::new(a.seed ^ 0x5EED_A441_7A15_0000);
    let mut next_arrival = 0.0f64;
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::with_capacity(prompts.len());
    let n = prompts.len();
    for (i, p) in prompts.into_iter().enumerate() {
        if let Some(rate) = a.request_rate {
            next_arrival += arrivals.exponential(rate);
            let at = start + Duration::from_secs_f64(next_arrival);
            if at >= deadline {
                push_unsent(&mut outcomes, n - i);
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(|e| anyhow!("request slots closed: {e}"))?,
            _ = tokio::time::sleep_until(deadline.into()) => {
                push_unsent(&mut outcomes, n - i);
                break;
            }
        };
        let (ep, model) = (ep.clone(), model.to_string());
        let key = a.api_key.clone();
        let limit = Duration::from_secs_f64(a.request_timeout).min(deadline.saturating_duration_since(Instant::now()));
        tasks.spawn(async move {
            let o = request::send(&ep, key.as_deref(), &model, &p, limit).await;
            drop(permit);
            o
        });
    }
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.unwrap_or_else(|e| Outcome::failed(format!("request task failed: {e}"))));
    }
    Ok((outcomes, start.elapsed().as_secs_f64()))
}

fn push_unsent(outcomes: &mut Vec<Outcome>, k: usize) {
    outcomes.extend((0..k).map(|_| Outcome::failed("not sent before the --max-duration deadline".into())));
}

/// GET /v1/models → the first id; "default" when the server has no such list.
/// A connection failure is an error: the server is not there.
async fn first_model(ep: &Endpoint, key: Option<&str>, limit: Duration) -> Result<String> {
    let fetch = async {
        let mut resp = ep.request("GET", "/v1/models", None, key).await?;
        let body = resp.read_body(1 << 20).await?;
        Ok::<_, anyhow::Error>((resp.status, body))
    };
    let (status, body) = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| anyhow!("GET {}/v1/models timed out after {:.0} s", ep.url, limit.as_secs_f64()))??;
    let id = (status == 200)
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|v| v.get("data")?.get(0)?.get("id")?.as_str().map(str::to_string));
    Ok(id.unwrap_or_else(|| "default".to_string()))
}

/// `num_prompts + warmup` prompts: the timed ones first.
fn make_prompts(a: &ServeBenchArgs) -> Result<Vec<Prompt>> {
    let total = a.num_prompts + a.warmup;
    let mut rng = Rng::new(a.seed);
    let draw_len = |len: usize, rng: &mut Rng| -> usize {
        let lo = ((len as f64) * (1.0 - a.range_ratio)).floor().max(1.0) as u64;
        let hi = ((len as f64) * (1.0 + a.range_ratio)).floor() as u64;
        rng.range(lo, hi + 1) as usize
    };
    match &a.dataset {
        None => Ok((0..total)
            .map(|_| {
                let n = draw_len(a.input_len, &mut rng);
                let ids: Vec<Value> =
                    (0..n).map(|_| Value::from(rng.range(a.token_id_min as u64, a.token_id_max as u64))).collect();
                let max_tokens = draw_len(a.output_len, &mut rng);
                Prompt { value: Value::Array(ids), len: Some(n), max_tokens, temperature: a.temperature }
            })
            .collect()),
        Some(path) => {
            let lines = read_dataset(path)?;
            Ok((0..total)
                .map(|i| {
                    let value = lines[i % lines.len()].clone();
                    let len = value.as_array().map(Vec::len);
                    Prompt { value, len, max_tokens: draw_len(a.output_len, &mut rng), temperature: a.temperature }
                })
                .collect())
        }
    }
}

/// The "prompt" values of a JSONL file (strings or token-id arrays).
fn read_dataset(path: &PathBuf) -> Result<Vec<Value>> {
    let size = std::fs::metadata(path).with_context(|| format!("reading dataset {}", path.display()))?.len();
    if size > MAX_DATASET_BYTES {
        bail!("dataset {} is {size} bytes, more than the {MAX_DATASET_BYTES} accepted", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading dataset {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        match v.get("prompt") {
            Some(p @ (Value::String(_) | Value::Array(_))) => out.push(p.clone()),
            _ => bail!("{}:{}: no \"prompt\" string or token-id array", path.display(), i + 1),
        }
    }
    if out.is_empty() {
        bail!("dataset {} has no prompts", path.display());
    }
    Ok(out)
}
