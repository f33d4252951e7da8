//! The `ferrum` binary: run, perplexity, inspect.

mod bench;
mod bench_serve;
mod chat;
mod generate;
mod hub;
mod loading;
mod inspect;
mod model_path;
mod perplexity;
mod repl;
mod run_output;
mod serve;
mod session;
mod quantize;
mod synth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrum", version, about = "Ferrum: a Rust-native LLM inference engine")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a completion for PROMPT with a model.
    Run(generate::RunArgs),
    /// Prompt-processing and token-generation throughput (like llama-bench).
    Bench(bench::BenchArgs),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Perplexity of a model on a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Write a model file of a real architecture's shapes with random weights.
    Synth(synth::SynthArgs),
    /// Convert an HF directory or a float GGUF to a quantized GGUF.
    Quantize(quantize::QuantizeArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => generate::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Perplexity(a) => perplexity::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Quantize(a) => quantize::run(a),
        Cmd::Inspect { file, json } => inspect::run(&file, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
