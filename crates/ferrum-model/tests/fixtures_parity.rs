//! Every fixture family (llama, qwen2, qwen3, qwen3moe) in every format (HF
//! safetensors, GGUF F32/F16/Q8_0) against transformers' logits, and batch
//! invariance: a sequence's logits are bit-identical alone, in a batch of
//! four, or prefilled in chunks of 7.

mod common;


use ferrum_kernels::{CpuBackend, KvDType};
use ferrum_model::load::load_model;
use ferrum_model::{ForwardBatch, KvCache, LogitRows, SeqInput};

use common::{compare, dir, reference, reference_file, FAMILIES};

#[test]
fn logits_match_transformers() {
    let mut failures = Vec::new();
    for family in FAMILIES {
        let r = reference(family);
        for (file, tol) in [("hf", 1e-4), ("model-f32.gguf", 1e-4), ("model-f16.gguf", 5e-3)] {
            let model = load_model(&dir(family).join(file), CpuBackend).unwrap_or_else(|e| panic!("{family}/{file}: {e}"));
            let (err, same) = compare(&model, &r);
            eprintln!("{family:9} {file:16} rel err {err:.2e} (tolerance {tol:.0e}), greedy {}", if same { "same" } else { "DIFFERENT" });
            if err > tol || !same {
                failures.push(format!("{family}/{file}: rel err {err:.3e}, greedy same: {same}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Q8_0 files: the quantized weights alone move the logits 2-4% away from
/// transformers' F32 logits on these tiny random models, so the engine's own
/// error (activation quantization) is measured against a float64 forward over
/// the exactly dequantized weights (`reference-q8_0.json`); against
/// transformers only the greedy chain must agree. The remaining 2-3% is the
/// 8-bit quantization of activations before each integer dot product (the
/// scheme llama.cpp uses); tiny random models amplify it.
#[test]
fn q8_0_logits_match_dequantized_reference() {
    let mut failures = Vec::new();
    for family in FAMILIES {
        let model = load_model(&dir(family).join("model-q8_0.gguf"), CpuBackend).unwrap();
        let (err, same) = compare(&model, &reference_file(family, "reference-q8_0.json"));
        let (err_hf, same_hf) = compare(&model, &reference(family));
        eprintln!("{family:9} q8_0 rel err {err:.2e} vs dequantized reference (tolerance 4e-2), {err_hf:.2e} vs transformers; greedy same: {same}/{same_hf}");
        if err > 4e-2 || !same || !same_hf {
            failures.push(format!("{family}: rel err {err:.3e}, greedy same: {same}/{same_hf}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Logits of every row of `target` computed (a) alone in one prefill,
/// (b) in a batch with three other sequences, (c) in prefill chunks of 7.
#[test]
fn batch_invariance() {
    for family in FAMILIES {
        let r = reference(family);
        let model = load_model(&dir(family).join("model-q8_0.gguf"), CpuBackend).unwrap();
        let res = &r.results[1];
        let mut target = res.prompt.clone();
        target.extend_from_slice(&res.greedy); // 21 tokens
        let n = target.len();
        let blocks_per_seq = 4u32;
        let table = |s: u32| -> Vec<u32> { (0..blocks_per_seq).map(|b| s * blocks_per_seq + b).collect() };
        let new_cache = || KvCache::new(&model.backend, &model.cfg, 4 * blocks_per_seq as usize, KvDType::F32).unwrap();

        // (a) alone.
        let mut kv = new_cache();
        let t0 = table(0);
        let alone = model
            .forward(&ForwardBatch { seqs: vec![SeqInput { tokens: &target, start_pos: 0, block_table: &t0, logits: LogitRows::All }] }, &mut kv, None)
            .unwrap();

        // (b) in a batch of four: two prefills of other lengths before it, and a
        // decode row of a sequence with a cached prefix after it.
        let mut kv = new_cache();
        let other: Vec<u32> = res.prompt.iter().rev().copied().collect();
        let (t1, t2, t3) = (table(1), table(2), table(3));
        model
            .forward(&ForwardBatch { seqs: vec![SeqInput { tokens: &other[..9], start_pos: 0, block_table: &t3, logits: LogitRows::None }] }, &mut kv, None)
            .unwrap();
        let batch = ForwardBatch {
            seqs: vec![
                SeqInput { tokens: &other[..5], start_pos: 0, block_table: &t1, logits: LogitRows::All },
                SeqInput { tokens: &other, start_pos: 0, block_table: &t2, logits: LogitRows::Last },
                SeqInput { tokens: &target, start_pos: 0, block_table: &t0, logits: LogitRows::All },
                SeqInput { tokens: &other[9..10], start_pos: 9, block_table: &t3, logits: LogitRows::Last },
            ],
        };
        let batched = model.forward(&batch, &mut kv, None).unwrap();
        let first = batched.rows.iter().position(|r| r.0 == 2).unwrap();
        for i in 0..n {
            assert_eq!(batched.row(first + i), alone.row(i), "{family}: batched row {i} differs");
        }

        // (c) chunks of 7.
        let mut kv = new_cache();
        for start in (0..n).step_by(7) {
            let end = (start + 7).min(n);
            let l = model
                .forward(
                    &ForwardBatch { seqs: vec![SeqInput { tokens: &target[start..end], start_pos: start, block_table: &t0, logits: LogitRows::All }] },
                    &mut kv,
                    None,
                )
                .unwrap();
            for i in start..end {
                assert_eq!(l.row(i - start), alone.row(i), "{family}: chunked row {i} differs");
            }
        }
    }
}

#[test]
fn bad_batches_are_errors() {
    let model = load_model(&dir("qwen2").join("model-f32.gguf"), CpuBackend).unwrap();
    let mut kv = KvCache::new(&model.backend, &model.cfg, 2, KvDType::F32).unwrap();
    let toks = [5u32, 6, 7];
    let short = [0u32];
    // Block table too short for the positions.
    let b = ForwardBatch { seqs: vec![SeqInput { tokens: &toks, start_pos: 15, block_table: &short, logits: LogitRows::Last }] };
    assert!(model.forward(&b, &mut kv, None).is_err());
    // Positions beyond the model's context (256).
    let table = [0u32, 1];
    let b = ForwardBatch { seqs: vec![SeqInput { tokens: &toks, start_pos: 255, block_table: &table, logits: LogitRows::Last }] };
    assert!(model.forward(&b, &mut kv, None).is_err());
    // Token id outside the vocabulary.
    let bad = [9999u32];
    let b = ForwardBatch { seqs: vec![SeqInput { tokens: &bad, start_pos: 0, block_table: &table, logits: LogitRows::Last }] };
    assert!(model.forward(&b, &mut kv, None).is_err());
}
