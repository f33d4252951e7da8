//! Shared helpers of the runner tests: the tiny Qwen2 fixture model and
//! request plumbing.
#![allow(dead_code)]

use std::path::PathBuf;

use ferrum_engine::runner::{Engine, EngineConfig, Event, FinishInfo, GenerateRequest, RequestStream};
use ferrum_engine::sampler::SamplingParams;
use ferrum_kernels::CpuBackend;
use ferrum_model::load::ModelFile;

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2/model-q8_0.gguf")
}

/// The fixture's context length.
pub const CTX: usize = 256;

/// An engine on the fixture model (EOS id 2).
pub fn engine(cfg: EngineConfig) -> Engine {
    let model = ModelFile::open(&fixture()).unwrap().load(CpuBackend, &mut |_, _| {}).unwrap();
    Engine::start(model, vec![2], cfg).unwrap()
}

pub fn config(max_batched: usize, max_seqs: usize, n_blocks: usize) -> EngineConfig {
    EngineConfig { max_num_batched_tokens: max_batched, max_num_seqs: max_seqs, n_blocks, ..EngineConfig::new(CTX, 0) }
}

/// Deterministic pseudo-random prompt tokens (avoiding the EOS id 2).
pub fn prompt(len: usize, seed: u32) -> Vec<u32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            3 + x % 500
        })
        .collect()
}

pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest { ignore_eos: true, ..GenerateRequest::new(prompt, Some(max_tokens), SamplingParams::greedy()) }
}

/// Tokens and the finish of a completed stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish: FinishInfo,
}

pub fn drain(s: RequestStream) -> Done {
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    for ev in s.collect_blocking() {
        match ev {
            Event::Token(t) => {
                tokens.push(t.id);
                logprobs.push(t.logprob);
            }
            Event::Finished(finish) => return Done { tokens, logprobs, finish },
            Event::PromptLogprobs(_) => {}
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
    panic!("stream ended without Finished");
}

/// Waits until the engine has no running or waiting request.
pub fn wait_idle(e: &Engine) {
    for _ in 0..2000 {
        let s = e.stats();
        if s.running == 0 && s.waiting == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("engine did not go idle: {:?}", e.stats());
}
