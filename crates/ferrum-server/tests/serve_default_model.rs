//! The serving path on the real default model (Qwen2.5-Coder-0.5B-Instruct
//! Q4_K_M, found through $FERRUM_DEFAULT_MODEL or the Ferrum cache; the test
//! fails when it is missing unless FERRUM_SKIP_MODEL_TESTS=1): 16 concurrent
//! greedy streams of mixed prompt lengths produce exactly what each produces
//! alone, and leave every KV block free or cached with the engine's
//! invariants intact (the checks of the fixture-model version in
//! serve_engine.rs, shared through tests/support); `n = 3` choices share one
//! prefill and equal `n = 1`. Sized to stay well under two minutes on two
//! cores; the test prints its timings.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ferrum_engine::runner::EngineConfig;
use ferrum_model::load::ModelFile;
use ferrum_text::Tokenizer;
use serde_json::json;
use support::*;

/// Text to cut prompts from: prose and code, so windows look like real input.
const CORPUS: &str = r#"A paged KV cache stores the keys and values of every attention layer in
fixed-size blocks. Each sequence owns a table that maps token positions to
blocks, so memory is allocated as the sequence grows instead of reserving the
whole context up front. When two requests begin with the same system prompt,
the blocks holding that prefix can be shared: a chained hash of the tokens in
each block identifies it, and a lookup walks the new prompt block by block.

def merge_intervals(intervals):
    """Merge overlapping [start, end] intervals and return them sorted."""
    intervals = sorted(intervals, key=lambda pair: pair[0])
    merged = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged

The scheduler runs in steps. In every step it first gives each running
sequence one decode token, then continues unfinished prompts in chunks, and
finally admits waiting requests while the token budget lasts. If the pool runs
out of blocks, the newest request is preempted: its blocks are released and it
is recomputed later, which the prefix cache makes cheaper.

fn binary_search(items: &[i64], target: i64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, items.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match items[mid].cmp(&target) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

Continuous batching keeps the accelerator busy: new requests join the batch as
soon as others finish, instead of waiting for the slowest member of a fixed
batch. Latency for short requests drops, and throughput rises because decode
steps, which are bound by memory bandwidth, process many sequences at once.

class LruCache:
    def __init__(self, capacity):
        self.capacity = capacity
        self.items = {}
        self.order = []

    def get(self, key):
        if key not in self.items:
            return None
        self.order.remove(key)
        self.order.append(key)
        return self.items[key]

    def put(self, key, value):
        if key in self.items:
            self.order.remove(key)
        elif len(self.items) >= self.capacity:
            oldest = self.order.pop(0)
            del self.items[oldest]
        self.items[key] = value
        self.order.append(key)
"#;

fn tokenizer(path: &Path) -> Tokenizer {
    match ModelFile::open(path).unwrap() {
        ModelFile::Gguf(g) => Tokenizer::from_gguf(&g).unwrap(),
        ModelFile::Hf { .. } => panic!("the default model is a GGUF file"),
    }
}

/// A prompt none of the corpus windows starts with; it fills two or more
/// blocks of 16 and ends inside a partial one (checked).
const N3_PROMPT: &str = "Review the following change for correctness and style. The function should \
return the number of distinct words in a text file, ignoring case and punctuation, and it must not \
read the whole file into memory at once.";

#[test]
fn sixteen_concurrent_streams_match_alone_on_the_default_model() {
    let Some(path) = default_model() else { return };
    let t0 = Instant::now();
    let tok = tokenizer(&path);
    let corpus = tok.encode(CORPUS, false, false).unwrap();
    let n3_prompt = tok.encode(N3_PROMPT, false, false).unwrap();
    assert!(n3_prompt.len() > 32 && !n3_prompt.len().is_multiple_of(16), "n = 3 prompt of {} tokens", n3_prompt.len());
    let n3 = |n: usize| json!({"prompt": n3_prompt, "n": n, "max_tokens": 12, "temperature": 0, "ignore_eos": true, "logprobs": 0});
    // Prompt lengths 5..=300 tokens, each a window starting at its own
    // offset (distinct first blocks: any prefix-cache reuse is incidental).
    let lens = [5usize, 300, 17, 120, 64, 9, 160, 33, 96, 16, 75, 40, 48, 120, 27, 12];
    assert!(corpus.len() > 320, "corpus of {} tokens", corpus.len());
    let reqs: Vec<(Vec<u32>, usize)> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let start = (i * 23) % (corpus.len() - len);
            (corpus[start..start + len].to_vec(), 24)
        })
        .collect();
    // Context 512, steps of 256 tokens (the 300-token prompt is chunked).
    let cfg = |n_blocks| EngineConfig { max_num_batched_tokens: 256, n_blocks, ..EngineConfig::new(512, 0) };

    let alone_srv = TestServer::ready(gguf_loader(path.clone(), cfg(64), None, Duration::ZERO));
    let t_alone = Instant::now();
    let alone = stream_one_by_one(alone_srv.addr, &reqs);
    let alone_time = t_alone.elapsed();
    let n1 = choices(&post(alone_srv.addr, "/v1/completions", &n3(1)).json());
    alone_srv.shutdown().unwrap();

    // 96 blocks for at most 103 (all 16 at full length): usually a little
    // preemption, so some requests are recomputed from a prefill.
    let srv = TestServer::ready(gguf_loader(path, cfg(96), None, Duration::ZERO));
    let t_together = Instant::now();
    let together = stream_concurrently(srv.addr, &reqs);
    let together_time = t_together.elapsed();
    assert_same_as_alone(&alone, &together);
    assert_engine_idle(&srv, 16);
    let preemptions = metric(srv.addr, "ferrum_preemptions_total");

    // n = 3 greedy: one prefill (no block of this prompt is cached yet), the
    // partial last block shared and copied; every choice equals n = 1.
    let t_n3 = Instant::now();
    let p0 = metric(srv.addr, "ferrum_prefill_tokens_total");
    let three = choices(&post(srv.addr, "/v1/completions", &n3(3)).json());
    assert_eq!(metric(srv.addr, "ferrum_prefill_tokens_total") - p0, n3_prompt.len() as f64);
    assert_eq!(three.len(), 3);
    for (i, c) in three.iter().enumerate() {
        assert_eq!(c, &n1[0], "greedy choice {i} differs from n = 1");
    }
    // Seeded sampling: the choices differ; a repeat reproduces them.
    let sampled = json!({"prompt": n3_prompt, "n": 3, "max_tokens": 12, "temperature": 1.0, "seed": 11, "ignore_eos": true});
    let a = choices(&post(srv.addr, "/v1/completions", &sampled).json());
    assert!(a[0] != a[1] && a[0] != a[2] && a[1] != a[2], "{a:?}");
    assert_eq!(choices(&post(srv.addr, "/v1/completions", &sampled).json()), a);
    let n3_time = t_n3.elapsed();
    assert_engine_idle(&srv, 16 + 9);
    srv.shutdown().unwrap();
    eprintln!(
        "default model: {:.1} s in all; 16 streams alone one by one {:.1} s, together {:.1} s ({preemptions} preemptions); n = 3 checks {:.1} s",
        t0.elapsed().as_secs_f64(),
        alone_time.as_secs_f64(),
        together_time.as_secs_f64(),
        n3_time.as_secs_f64()
    );
}
