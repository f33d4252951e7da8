//! Loading a model for a command, with a progress bar on stderr.

use std::path::Path;

use anyhow::{Context, Result};
use ferrum_kernels::CpuBackend;
use ferrum_model::load::ModelFile;
use ferrum_model::Model;
use indicatif::{ProgressBar, ProgressStyle};

pub fn load(path: &Path) -> Result<(ModelFile, Model<CpuBackend>)> {
    let file = ModelFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(path.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string());
    let model = file
        .load(CpuBackend, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    Ok((file, model))
}
