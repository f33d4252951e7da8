//! `ferrum quantize IN OUT --type Q4_K_M`: an HF directory or a float GGUF
//! to a llama.cpp-compatible quantized GGUF (see
//! `ferrum_model::convert::quantize`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ferrum_model::convert::{quantize_model, Progress, QuantScheme};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input: a Hugging Face directory (config.json, safetensors, tokenizer.json) or an F32/F16/BF16 GGUF.
    input: PathBuf,
    /// Output GGUF file.
    output: PathBuf,
    /// Scheme: Q4_K_M, Q5_K_M, Q6_K, Q8_0 or F16.
    #[arg(long = "type", short = 't', default_value = "Q4_K_M")]
    ty: String,
}

/// A byte-progress bar on stderr.
pub fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let scheme = QuantScheme::parse(&a.ty)?;
    let bar = progress_bar(&format!("quantize {scheme}"));
    let start = Instant::now();
    let report = quantize_model(&a.input, &a.output, scheme, &mut |p: Progress<'_>| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_prefix(p.tensor.to_string());
    })?;
    bar.finish_and_clear();
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &report.tensors {
        *types.entry(t.ty.name()).or_default() += 1;
    }
    let mix: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "wrote {} ({} {scheme}): {} tensors ({}), {:.1} MiB -> {:.1} MiB in {:.1} s{}",
        a.output.display(),
        report.arch,
        report.tensors.len(),
        mix.join(", "),
        report.bytes_in as f64 / (1u64 << 20) as f64,
        report.bytes_out as f64 / (1u64 << 20) as f64,
        start.elapsed().as_secs_f64(),
        if report.n_fallback > 0 {
            format!("; {} tensor(s) fell back to another type (rows not a multiple of the block)", report.n_fallback)
        } else {
            String::new()
        }
    );
    Ok(())
}
