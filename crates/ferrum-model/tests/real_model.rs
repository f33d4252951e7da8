//! The real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M) against
//! llama.cpp's greedy continuations of eight prompts.

mod common;

use ferrum_kernels::CpuBackend;
use ferrum_model::load::load_model;

#[test]
fn greedy_tokens_match_llama_cpp() {
    let Some(path) = common::default_model() else { return };
    let model = load_model(&path, CpuBackend).unwrap();
    let (matched, total) = common::llama_cpp_greedy_matches(&model);
    // Target 7/8; see docs/bench/cpu-default-model.md for why near-ties differ.
    assert!(matched >= 5, "only {matched}/{total} prompts match");
}

/// Log-probabilities of llama.cpp's top-5 tokens at every step where the
/// continuation agrees, compared with ours (teacher-forced on its tokens).
#[test]
fn top5_logprobs_close_to_llama_cpp() {
    let Some(path) = common::default_model() else { return };
    let model = load_model(&path, CpuBackend).unwrap();
    let cases = common::llama_cpp_cases();
    let mut worst = 0.0f64;
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for c in cases.iter().take(3) {
        // Teacher forcing: the prompt plus llama.cpp's continuation, logits at every row.
        let mut seq = c.prompt_tokens.clone();
        seq.extend_from_slice(&c.completion_tokens[..c.completion_tokens.len() - 1]);
        let rows = common::all_logits(&model, &seq);
        for (step, top) in c.top5_per_step.iter().enumerate() {
            let row = &rows[c.prompt_tokens.len() - 1 + step];
            let lse = common::log_sum_exp(row);
            if std::env::var_os("FERRUM_TEST_VERBOSE").is_some() {
                let t0 = &top.as_array().unwrap()[0];
                let id = t0["id"].as_u64().unwrap() as usize;
                eprintln!("{} step {step}: top1 {id} ours {:.4} ref {:.4}", c.id, row[id] as f64 - lse, t0["logprob"].as_f64().unwrap());
            }
            for t in top.as_array().unwrap() {
                let id = t["id"].as_u64().unwrap() as usize;
                let want = t["logprob"].as_f64().unwrap();
                let got = row[id] as f64 - lse;
                let d = (got - want).abs();
                worst = worst.max(d);
                sum += d;
                n += 1;
            }
        }
    }
    eprintln!("top-5 logprob |diff| vs llama.cpp: mean {:.4}, max {:.4} over {n}", sum / n as f64, worst);
    assert!(worst < 0.5, "max logprob difference {worst}");
}

/// Writes every named intermediate of one decode step to FERRUM_TRACE_DIR
/// (`{name}-{layer}` and `logits`, little-endian f32), for
/// tools/llamacpp_layer_diff.py to compare with llama.cpp's. The step is
/// FERRUM_TRACE_STEP of reference prompt FERRUM_TRACE_CASE (teacher-forced
/// on llama.cpp's tokens); FERRUM_TRACE_KV=f16 picks llama.cpp's cache type.
#[test]
#[ignore = "diagnostic: run by tools/llamacpp_layer_diff.py"]
fn layer_trace_dump() {
    use ferrum_kernels::KvDType;
    use ferrum_model::{ForwardBatch, KvCache, LogitRows, SeqInput, BLOCK_SIZE};
    let Some(path) = common::default_model() else { return };
    let var = |k: &str| std::env::var(k).ok();
    let dir = std::path::PathBuf::from(var("FERRUM_TRACE_DIR").expect("FERRUM_TRACE_DIR"));
    let case: usize = var("FERRUM_TRACE_CASE").map_or(0, |s| s.parse().unwrap());
    let step: usize = var("FERRUM_TRACE_STEP").map_or(0, |s| s.parse().unwrap());
    let dtype = if var("FERRUM_TRACE_KV").as_deref() == Some("f16") { KvDType::F16 } else { common::KV_DTYPE };
    let model = load_model(&path, CpuBackend).unwrap();
    let c = &common::llama_cpp_cases()[case];
    let mut toks = c.prompt_tokens.clone();
    toks.extend_from_slice(&c.completion_tokens[..step]);
    let n_blocks = (toks.len() + 1).div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, dtype).unwrap();
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: String, v: &[f32]| std::fs::write(dir.join(name), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    // The prompt in one prefill, then llama.cpp's tokens one at a time, as
    // llama.cpp produced them; the last decode step is traced.
    let mut start = 0;
    let mut len = c.prompt_tokens.len();
    while start < toks.len() {
        let last = start + len == toks.len();
        let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &toks[start..start + len], start_pos: start, block_table: &table, logits: LogitRows::Last }] };
        let mut dump = |name: &str, layer: Option<usize>, v: &[f32]| write(layer.map_or(name.to_string(), |l| format!("{name}-{l}")), v);
        let logits = model.forward(&batch, &mut kv, if last { Some(&mut dump) } else { None }).unwrap();
        if last {
            write("logits".into(), logits.row(0));
        }
        start += len;
        len = 1;
    }
}
