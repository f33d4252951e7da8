//! The run's results: a markdown table for people and a JSON file for scripts.

use serde::Serialize;
use serde_json::{Map, Value};

use super::request::Outcome;
use super::stats::{summarize, Summary};

/// Most error messages kept in the JSON report.
const MAX_ERRORS: usize = 100;

/// How the run was configured (echoed into the report).
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub base_url: String,
    pub model: String,
    pub endpoint: &'static str,
    pub dataset: Option<String>,
    pub num_prompts: usize,
    pub concurrency: Option<usize>,
    pub request_rate: Option<f64>,
    pub input_len: usize,
    pub output_len: usize,
    pub range_ratio: f64,
    pub seed: u64,
    pub warmup: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub config: RunConfig,
    pub successful: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input plus output tokens per second.
    pub total_token_throughput: f64,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
    pub e2el_ms: Summary,
    /// Per successful request, in completion order.
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
    pub ttfts_ms: Vec<f64>,
    pub e2els_ms: Vec<f64>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(config: RunConfig, outcomes: &[Outcome], duration_s: f64) -> Self {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
        let ms = |s: f64| s * 1e3;
        let total_in: usize = ok.iter().map(|o| o.prompt_tokens).sum();
        let total_out: usize = ok.iter().map(|o| o.output_tokens).sum();
        let ttfts: Vec<f64> = ok.iter().map(|o| ms(o.ttft)).collect();
        let e2els: Vec<f64> = ok.iter().map(|o| ms(o.e2e)).collect();
        // TPOT: decode time per output token after the first.
        let tpots: Vec<f64> =
            ok.iter().filter(|o| o.output_tokens > 1).map(|o| ms(o.e2e - o.ttft) / (o.output_tokens - 1) as f64).collect();
        let itls: Vec<f64> = ok.iter().flat_map(|o| o.itl.iter().map(|&g| ms(g))).collect();
        let per_s = |x: f64| if duration_s > 0.0 { x / duration_s } else { 0.0 };
        Report {
            config,
            successful: ok.len(),
            failed: outcomes.len() - ok.len(),
            duration_s,
            total_input_tokens: total_in,
            total_output_tokens: total_out,
            request_throughput: per_s(ok.len() as f64),
            output_throughput: per_s(total_out as f64),
            total_token_throughput: per_s((total_in + total_out) as f64),
            ttft_ms: summarize(&ttfts),
            tpot_ms: summarize(&tpots),
            itl_ms: summarize(&itls),
            e2el_ms: summarize(&e2els),
            input_lens: ok.iter().map(|o| o.prompt_tokens).collect(),
            output_lens: ok.iter().map(|o| o.output_tokens).collect(),
            ttfts_ms: ttfts,
            e2els_ms: e2els,
            errors: outcomes.iter().filter_map(|o| o.error.clone()).take(MAX_ERRORS).collect(),
        }
    }

    /// The JSON report, with vLLM-style flat keys (`mean_ttft_ms`, `p99_itl_ms`, ...)
    /// next to the nested summaries so existing comparison scripts can read it.
    pub fn to_json(&self) -> serde_json::Result<Value> {
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(m) = &mut v {
            let flat: Vec<(String, f64)> = self
                .metrics()
                .iter()
                .flat_map(|(name, s)| {
                    [("mean", s.mean), ("median", s.median), ("p90", s.p90), ("p99", s.p99)]
                        .map(|(k, x)| (format!("{k}_{name}_ms"), x))
                })
                .collect();
            let extra: Map<String, Value> = flat.into_iter().map(|(k, x)| (k, Value::from(x))).collect();
            m.extend(extra);
        }
        Ok(v)
    }

    fn metrics(&self) -> [(&'static str, Summary); 4] {
        [("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("itl", self.itl_ms), ("e2el", self.e2el_ms)]
    }

    pub fn markdown(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let load = match (c.request_rate, c.concurrency) {
            (Some(r), Some(k)) => format!("Poisson {r} req/s, at most {k} in flight"),
            (Some(r), None) => format!("Poisson {r} req/s"),
            (None, k) => format!("closed loop, concurrency {}", k.unwrap_or(1)),
        };
        s.push_str(&format!("## ferrum bench serve: {} ({}, {load})\n\n", c.base_url, c.model));
        s.push_str("| metric | value |\n|---|---:|\n");
        let rows: [(&str, String); 9] = [
            ("successful requests", self.successful.to_string()),
            ("failed requests", self.failed.to_string()),
            ("duration (s)", format!("{:.2}", self.duration_s)),
            ("total input tokens", self.total_input_tokens.to_string()),
            ("total output tokens", self.total_output_tokens.to_string()),
            ("request throughput (req/s)", format!("{:.2}", self.request_throughput)),
            ("output token throughput (tok/s)", format!("{:.2}", self.output_throughput)),
            ("total token throughput (tok/s)", format!("{:.2}", self.total_token_throughput)),
            ("warm-up requests (not counted)", c.warmup.to_string()),
        ];
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s.push_str("\n| latency (ms) | mean | median | p90 | p99 |\n|---|---:|---:|---:|---:|\n");
        for (name, m) in self.metrics() {
            s.push_str(&format!("| {} | {:.2} | {:.2} | {:.2} | {:.2} |\n", name.to_uppercase(), m.mean, m.median, m.p90, m.p99));
        }
        if let Some(e) = self.errors.first() {
            s.push_str(&format!("\nfirst error: {e}\n"));
        }
        s
    }
}
