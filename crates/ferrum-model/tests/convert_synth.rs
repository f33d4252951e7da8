//! `convert::synth_*`: every tiny preset writes a GGUF that Ferrum loads and
//! runs; the real presets are checked for shapes, parameter counts and file
//! sizes without writing; the safetensors format loads as an HF directory;
//! a donor's tokenizer is copied and padded.

mod common;

use std::path::PathBuf;

use ferrum_core::GgmlType;
use ferrum_format::gguf::{GgufFile, GgufValue};
use ferrum_kernels::CpuBackend;
use ferrum_model::convert::{plan_gguf, preset, synth_gguf, synth_safetensors, ConvertError, QuantScheme, SynthOptions, PRESET_NAMES};
use ferrum_model::load::load_model;
use ferrum_model::Model;

const TINY: [&str; 4] = ["qwen3moe-tiny", "qwen3-tiny", "llama-tiny", "qwen2-tiny"];

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrum-convert-s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Prefill 6 tokens and decode 3 greedily: every logit finite and not flat.
fn runs(model: &Model<CpuBackend>, what: &str) {
    let (tokens, rows) = common::greedy(model, &[5, 300, 17, 42, 7, 99], 4);
    for row in &rows {
        assert!(row.iter().all(|x| x.is_finite()), "{what}: non-finite logits");
        let (lo, hi) = row.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi - lo > 1e-3 && hi - lo < 100.0, "{what}: logit range {lo}..{hi}");
    }
    eprintln!("{what}: greedy {tokens:?}");
}

#[test]
fn tiny_presets_load_and_run() {
    for name in TINY {
        let spec = preset(name).unwrap();
        for scheme in [QuantScheme::Q4KM, QuantScheme::Q8_0] {
            let out = tmp(&format!("{name}-{scheme}.gguf"));
            let opts = SynthOptions { scheme, ..SynthOptions::default() };
            let report = synth_gguf(&spec, &out, &opts, &mut |_| {}).unwrap();
            let f = GgufFile::open(&out).unwrap();
            // The file holds exactly the plan (names, shapes, types).
            let plan = plan_gguf(&spec, scheme);
            assert_eq!(f.tensors().len(), plan.len());
            for (t, p) in f.tensors().iter().zip(&plan) {
                assert_eq!((&t.name, &t.dims, t.ty), (&p.name, &p.dims, p.ty), "{name}");
            }
            assert_eq!(report.bytes, plan.iter().map(|p| p.n_bytes()).sum::<u64>());
            assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), spec.vocab);
            assert_eq!(f.get_u32("general.file_type").unwrap(), scheme.file_type());
            drop(f);
            let model = load_model(&out, CpuBackend).unwrap_or_else(|e| panic!("{name} {scheme}: {e}"));
            runs(&model, &format!("{name} {scheme}"));
            let _ = std::fs::remove_file(out);
        }
    }
}

/// Real presets: shapes and sizes only (nothing written).
#[test]
fn real_presets_have_the_published_shapes() {
    // (preset, total parameters in billions as published, Q4_K_M GiB range)
    let cases = [
        ("qwen3moe-30b-a3b", 30.5, 16.0..18.5),
        ("qwen3-0.6b", 0.60, 0.35..0.5),
        ("qwen3-8b", 8.19, 4.5..5.2),
        ("llama-3.1-8b", 8.03, 4.4..5.0),
        ("qwen2.5-0.5b", 0.49, 0.35..0.5),
    ];
    for (name, billions, gib) in cases {
        let spec = preset(name).unwrap();
        let params = spec.n_params() as f64 / 1e9;
        let plan = plan_gguf(&spec, QuantScheme::Q4KM);
        let size = plan.iter().map(|p| p.n_bytes()).sum::<u64>() as f64 / (1u64 << 30) as f64;
        eprintln!("{name:17} {params:.3} B parameters, {} tensors, Q4_K_M data {size:.2} GiB", plan.len());
        assert!((params / billions - 1.0).abs() < 0.01, "{name}: {params} B vs {billions} B");
        assert!(gib.contains(&size), "{name}: {size} GiB");
    }
    let moe = plan_gguf(&preset("qwen3moe-30b-a3b").unwrap(), QuantScheme::Q4KM);
    let find = |n: &str| moe.iter().find(|p| p.name == n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(find("blk.0.ffn_gate_exps.weight").dims, vec![2048, 768, 128]);
    assert_eq!(find("blk.0.ffn_down_exps.weight").dims, vec![768, 2048, 128]);
    assert_eq!(find("blk.0.ffn_down_exps.weight").ty, GgmlType::Q6K); // "more bits" layer
    assert_eq!(find("blk.7.ffn_down_exps.weight").ty, GgmlType::Q4K);
    assert_eq!(find("blk.8.ffn_down_exps.weight").ty, GgmlType::Q6K); // (8 - 48/8) % 3 == 2
    assert_eq!(find("blk.0.ffn_gate_inp.weight").ty, GgmlType::F32);
    assert_eq!(find("blk.0.attn_q.weight").dims, vec![2048, 4096]);
    assert_eq!(find("blk.0.attn_k.weight").dims, vec![2048, 512]);
    assert_eq!(find("blk.47.attn_k_norm.weight").dims, vec![128]);
    assert_eq!(find("output.weight").dims, vec![2048, 151_936]);
    assert_eq!(find("output.weight").ty, GgmlType::Q6K);
    let llama = plan_gguf(&preset("llama-3.1-8b").unwrap(), QuantScheme::Q4KM);
    assert_eq!(llama.iter().find(|p| p.name == "rope_freqs.weight").map(|p| p.dims.clone()), Some(vec![64]));
}

#[test]
fn unknown_preset_lists_the_valid_ones() {
    let e = preset("qwen9-1t").unwrap_err();
    assert!(matches!(e, ConvertError::UnknownPreset { .. }));
    let text = e.to_string();
    for name in PRESET_NAMES {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn unwritable_output_fails_first() {
    let blocker = tmp("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    // The huge preset would take minutes if any work came first.
    let e = synth_gguf(&preset("qwen3moe-30b-a3b").unwrap(), &blocker.join("x.gguf"), &SynthOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, ConvertError::Output { .. }), "{e}");
    let e =
        synth_safetensors(&preset("qwen3moe-30b-a3b").unwrap(), &blocker.join("dir"), &SynthOptions::default(), 1 << 32, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ConvertError::Output { .. }), "{e}");
    let _ = std::fs::remove_file(blocker);
}

/// BF16 HF directory in several shards (index written); Ferrum loads it.
#[test]
fn safetensors_format_loads_as_hf_dir() {
    for name in ["qwen3moe-tiny", "llama-tiny"] {
        let dir = tmp(&format!("{name}-hf"));
        let spec = preset(name).unwrap();
        let report = synth_safetensors(&spec, &dir, &SynthOptions::default(), 1 << 20, &mut |_| {}).unwrap();
        assert_eq!(report.bytes, spec.n_params() * 2);
        assert!(dir.join("model.safetensors.index.json").is_file());
        let shards = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "safetensors")).count();
        eprintln!("{name}: {shards} shards");
        assert!(shards > 1, "{name}: {shards} shards");
        let model = load_model(&dir, CpuBackend).unwrap_or_else(|e| panic!("{name}: {e}"));
        runs(&model, &format!("{name} safetensors"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A donor's tokenizer keys are copied; its 512 tokens are padded to the
/// preset's 1024 rows with UNUSED `[PAD{id}]` tokens.
#[test]
fn donor_tokenizer_is_copied_and_padded() {
    let donor = common::repo_root().join("tests/fixtures/models/qwen3/model-f32.gguf");
    let out = tmp("donor.gguf");
    let opts = SynthOptions { donor: Some(donor.clone()), ..SynthOptions::default() };
    synth_gguf(&preset("qwen3-tiny").unwrap(), &out, &opts, &mut |_| {}).unwrap();
    let (f, d) = (GgufFile::open(&out).unwrap(), GgufFile::open(&donor).unwrap());
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 1024);
    assert_eq!(&tokens[..512], d.get_array("tokenizer.ggml.tokens").unwrap());
    assert_eq!(tokens[700], GgufValue::String("[PAD700]".into()));
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap(), d.get_array("tokenizer.ggml.merges").unwrap());
    drop(f);
    runs(&load_model(&out, CpuBackend).unwrap(), "qwen3-tiny with donor");
    // A donor with more tokens than the model has rows is refused.
    let e =
        synth_gguf(&preset("qwen3-tiny").unwrap(), &out, &SynthOptions { donor: common::default_model(), ..SynthOptions::default() }, &mut |_| {});
    if let Err(e) = e {
        assert!(matches!(e, ConvertError::Donor { .. }), "{e}");
        assert!(!out.exists());
    }
}
