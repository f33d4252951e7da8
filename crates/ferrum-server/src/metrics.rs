//! `/metrics` in the Prometheus text format (prometheus-client).
//!
//! Engine gauges and counters (requests running/waiting, KV blocks, prefix
//! cache, token counts) are read from the engine's latest snapshot at each
//! scrape; latency histograms are observed by the request tasks.

use std::sync::{Arc, Mutex};

use ferrum_engine::runner::EngineStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishLabel {
    pub finish_reason: String,
}

pub struct Metrics {
    registry: Registry,
    snapshot: Arc<Mutex<Option<EngineStats>>>,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    /// Finished choices by finish reason.
    pub requests: Family<FinishLabel, Counter>,
    /// Choices streamed to a client that went away.
    pub disconnects: Counter,
}

/// Reads the snapshot the `/metrics` handler stored before encoding.
#[derive(Debug)]
struct EngineCollector {
    snapshot: Arc<Mutex<Option<EngineStats>>>,
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counter<N: prometheus_client::encoding::EncodeCounterValue>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.snapshot.lock().ok().and_then(|g| *g) else { return Ok(()) };
        let i = |x: usize| x as i64;
        gauge(&mut enc, "num_requests_running", "Sequences holding KV blocks and scheduled each step.", i(s.running))?;
        gauge(&mut enc, "num_requests_waiting", "Sequences queued for admission.", i(s.waiting))?;
        gauge(&mut enc, "kv_cache_blocks_total", "KV blocks in the pool.", i(s.kv_blocks_total))?;
        gauge(&mut enc, "kv_cache_blocks_used", "KV blocks referenced by running sequences.", i(s.kv_blocks_used))?;
        gauge(&mut enc, "kv_cache_blocks_cached", "Unreferenced KV blocks kept for prefix reuse.", i(s.kv_blocks_cached))?;
        gauge(&mut enc, "kv_cache_block_size", "Tokens per KV block.", i(s.block_size))?;
        counter(&mut enc, "prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", s.prefix_cache_queries)?;
        counter(&mut enc, "prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache.", s.prefix_cache_hits)?;
        counter(&mut enc, "prompt_tokens", "Prompt tokens of accepted sequences.", s.prompt_tokens)?;
        counter(&mut enc, "prefill_tokens", "Prompt tokens computed by the model (prefix-cache hits excluded).", s.prefill_tokens)?;
        counter(&mut enc, "generation_tokens", "Tokens sampled.", s.generation_tokens)?;
        counter(&mut enc, "engine_steps", "Forward steps run.", s.steps)?;
        let secs = |ns: u64| ns as f64 * 1e-9;
        counter(&mut enc, "engine_step_seconds", "Time spent in engine steps (scheduling, forward pass, sampling, bookkeeping).", secs(s.step_ns))?;
        counter(&mut enc, "engine_forward_seconds", "Time spent in the forward pass and sampling.", secs(s.forward_ns))?;
        counter(&mut enc, "preemptions", "Sequences preempted for lack of KV blocks.", s.preemptions)?;
        counter(&mut enc, "kv_block_copies", "KV blocks copied for copy-on-write (n > 1 choices).", s.kv_block_copies)?;
        Ok(())
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrum");
        let snapshot = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(EngineCollector { snapshot: snapshot.clone() }));
        // 0.5 ms .. ~65 s (prometheus-client adds the help text's final period).
        let latency = || Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        let m = Metrics {
            ttft: latency(),
            tpot: latency(),
            itl: latency(),
            e2e: latency(),
            requests: Family::default(),
            disconnects: Counter::default(),
            snapshot,
            registry,
        };
        let mut r = m.registry;
        r.register("time_to_first_token_seconds", "Time from arrival to the first output token", m.ttft.clone());
        r.register("time_per_output_token_seconds", "Mean time per output token after the first, per choice", m.tpot.clone());
        r.register("inter_token_latency_seconds", "Time between consecutive output tokens", m.itl.clone());
        r.register("e2e_request_latency_seconds", "Time from arrival to the end of a choice", m.e2e.clone());
        r.register("requests", "Finished choices by finish reason", m.requests.clone());
        r.register("client_disconnects", "Choices cancelled because the client went away", m.disconnects.clone());
        Metrics { registry: r, ..m }
    }

    /// The text exposition, with `stats` as the engine's state (`None` while loading).
    pub fn render(&self, stats: Option<EngineStats>) -> String {
        if let Ok(mut g) = self.snapshot.lock() {
            *g = stats;
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn finished(&self, reason: &str) {
        self.requests.get_or_create(&FinishLabel { finish_reason: reason.to_string() }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
