//! Choosing the compute backend and loading a model onto it, with a progress
//! bar on stderr. Commands are written once, generic over the backend, as a
//! [`ModelTask`] that `with_model` runs on whichever backend was chosen.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ferrum_kernels::cuda::{self, CudaBackend, CudaOptions};
use ferrum_kernels::{Backend, CpuBackend, KvDType};
use ferrum_model::load::ModelFile;
use ferrum_model::{KvCache, Model};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CUDA when a GPU is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The backend options every model-running command takes.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Fraction of the GPU's memory Ferrum may use (weights, activations and KV cache).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// CUDA: launch every kernel of decode steps instead of replaying CUDA graphs.
    #[arg(long)]
    pub no_cuda_graphs: bool,
    /// CUDA: keep activations in f32 in the quantized matrix-vector kernels
    /// instead of quantizing them to 8 bits (exact, slower).
    #[arg(long)]
    pub float_activations: bool,
    /// CUDA: start each kernel only after the previous one has finished
    /// (no programmatic dependent launch on Hopper GPUs).
    #[arg(long)]
    pub no_pdl: bool,
}

/// What a task learns about the backend besides the model.
pub struct BackendInfo {
    pub name: &'static str,
    /// Element type of the KV cache (f16 on GPUs, as llama.cpp; f32 on the CPU).
    pub kv_dtype: KvDType,
    /// Bytes the KV cache may take (`None`: the command's own default).
    pub kv_budget: Option<usize>,
}

impl BackendInfo {
    /// KV capacity in tokens for `model` within the budget, else `default`.
    pub fn kv_tokens<B: Backend>(&self, model: &Model<B>, default: usize) -> usize {
        let per_token = KvCache::<B>::bytes_per_token(&model.cfg, self.kv_dtype).max(1);
        self.kv_budget.map(|b| b / per_token).unwrap_or(default)
    }
}

/// A command body that runs on any backend.
pub trait ModelTask {
    type Out;
    fn run<B: Backend + 'static>(self, file: ModelFile, model: Model<B>, info: BackendInfo) -> Result<Self::Out>;
}

/// Load the model at `path` on the chosen backend and run `task` with it.
pub fn with_model<T: ModelTask>(path: &Path, b: &BackendArgs, task: T) -> Result<T::Out> {
    if !(0.05..=1.0).contains(&b.gpu_memory_utilization) {
        bail!("--gpu-memory-utilization must be in [0.05, 1], got {}", b.gpu_memory_utilization);
    }
    let use_cuda = match b.backend {
        BackendKind::Cpu => false,
        BackendKind::Cuda => true,
        BackendKind::Auto => cuda::device_available(),
    };
    let file = ModelFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    if !use_cuda {
        let model = load(&file, path, CpuBackend)?;
        return task.run(file, model, BackendInfo { name: "cpu", kv_dtype: KvDType::F32, kv_budget: None });
    }
    let opts = CudaOptions {
        device: b.device,
        cache_dir: Some(crate::model_path::cache_root().join("cuda")),
        float_activations: b.float_activations,
        eager: b.no_cuda_graphs,
        serial_launch: b.no_pdl,
    };
    let gpu = CudaBackend::new(&opts).context("starting the CUDA backend")?;
    let (_, total) = gpu.mem_info()?;
    eprintln!("cuda: {} (sm_{}{}), {:.1} GiB", gpu.device_name, gpu.compute_capability.0, gpu.compute_capability.1, total as f64 / (1u64 << 30) as f64);
    let model = load(&file, path, gpu)?;
    model.backend.synchronize()?;
    let (free, total) = model.backend.mem_info()?;
    // Keep room for activations and scratch (prefill of a few thousand tokens,
    // f16 copies of one layer's experts).
    let reserve = 4usize << 30;
    let allowed = (total as f64 * b.gpu_memory_utilization) as usize;
    let used = total.saturating_sub(free);
    let budget = allowed.saturating_sub(used).saturating_sub(reserve);
    if budget == 0 {
        bail!("no GPU memory left for the KV cache: {:.1} GiB used of {:.1} GiB allowed", used as f64 / 1e9 * 0.931, allowed as f64 / 1e9 * 0.931);
    }
    task.run(file, model, BackendInfo { name: "cuda", kv_dtype: KvDType::F16, kv_budget: Some(budget) })
}

fn load<B: Backend>(file: &ModelFile, path: &Path, backend: B) -> Result<Model<B>> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(path.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string());
    let model = file
        .load(backend, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    Ok(model)
}
