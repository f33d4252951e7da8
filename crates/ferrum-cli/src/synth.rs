//! `ferrum synth PRESET -o OUT`: a model file of a real architecture's
//! shapes with random weights (see `ferrum_model::convert::synth`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use ferrum_model::convert::{preset, synth_gguf, synth_safetensors, QuantScheme, SynthOptions, PRESET_NAMES};

use crate::quantize::progress_bar;

#[derive(Args)]
pub struct SynthArgs {
    /// Architecture preset (e.g. qwen3moe-30b-a3b, qwen3-8b, llama-3.1-8b, qwen3-tiny; `list` prints them all).
    preset: String,
    /// Output: a .gguf file, or a directory with --format safetensors.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Quantization scheme of the GGUF: Q4_K_M, Q5_K_M, Q6_K, Q8_0 or F16.
    #[arg(long, default_value = "q4_k_m")]
    quant: String,
    /// Copy tokenizer metadata from this GGUF (default: a synthetic byte-level vocabulary).
    #[arg(long)]
    donor: Option<PathBuf>,
    /// Output format: gguf, or safetensors (an HF directory of BF16 shards).
    #[arg(long, default_value = "gguf")]
    format: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest safetensors shard, in GB.
    #[arg(long, default_value_t = 4.0)]
    shard_gb: f64,
}

pub fn run(a: SynthArgs) -> Result<()> {
    if a.preset == "list" {
        for name in PRESET_NAMES {
            println!("{name}");
        }
        return Ok(());
    }
    let spec = preset(&a.preset)?;
    let scheme = QuantScheme::parse(&a.quant)?;
    let Some(out) = a.output else { bail!("missing -o OUT (the file or directory to write)") };
    let opts = SynthOptions { scheme, donor: a.donor, seed: a.seed };
    let bar = progress_bar(&format!("synth {}", a.preset));
    let start = Instant::now();
    let mut progress = |p: ferrum_model::convert::Progress<'_>| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let report = match a.format.as_str() {
        "gguf" => synth_gguf(&spec, &out, &opts, &mut progress)?,
        "safetensors" => {
            if !a.shard_gb.is_finite() || a.shard_gb <= 0.0 {
                bail!("--shard-gb must be positive, got {}", a.shard_gb);
            }
            synth_safetensors(&spec, &out, &opts, (a.shard_gb * 1e9) as u64, &mut progress)?
        }
        other => bail!("unknown --format `{other}`; valid formats: gguf, safetensors"),
    };
    bar.finish_and_clear();
    let what = if a.format == "gguf" { scheme.name() } else { "BF16" };
    eprintln!(
        "wrote {} ({}, {what}): {} tensors, {} parameters, {:.1} MiB of weights in {:.1} s",
        out.display(),
        a.preset,
        report.tensors,
        count(report.n_params),
        report.bytes as f64 / (1u64 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `1.23 B`, `45.6 M`.
fn count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.1} M", n as f64 / 1e6)
    }
}
