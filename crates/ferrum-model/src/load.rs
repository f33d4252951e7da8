//! Opening a model from a path: a GGUF file or a Hugging Face directory
//! (config.json + safetensors).

use std::path::Path;
use std::sync::Arc;

use ferrum_format::gguf::GgufFile;
use ferrum_format::hf_config::HfConfig;
use ferrum_format::safetensors::SafeTensors;
use ferrum_kernels::Backend;

use crate::config::ModelConfig;
use crate::decoder::Model;
use crate::error::{ModelError, Result};
use crate::source::{GgufSource, HfSource, TensorSource};
use crate::weights;

/// A model file opened and its configuration parsed, before weights load.
pub enum ModelFile {
    Gguf(Arc<GgufFile>),
    Hf { dir: std::path::PathBuf, config: HfConfig },
}

impl ModelFile {
    pub fn open(path: &Path) -> Result<ModelFile> {
        if path.is_dir() {
            let config = HfConfig::from_file(&path.join("config.json"))?;
            return Ok(ModelFile::Hf { dir: path.to_path_buf(), config });
        }
        Ok(ModelFile::Gguf(Arc::new(GgufFile::open(path)?)))
    }

    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            ModelFile::Gguf(f) => ModelConfig::from_gguf(f),
            ModelFile::Hf { config, .. } => ModelConfig::from_hf(config),
        }
    }

    /// Load every weight onto `backend`. `progress(done, total)` is called
    /// after each tensor.
    pub fn load<B: Backend>(&self, backend: B, progress: &mut dyn FnMut(usize, usize)) -> Result<Model<B>> {
        let cfg = self.config()?;
        let total = weights::tensor_count(&cfg);
        let mut src: Box<dyn TensorSource> = match self {
            ModelFile::Gguf(f) => Box::new(GgufSource::new(f.clone())),
            ModelFile::Hf { dir, .. } => Box::new(HfSource::new(SafeTensors::open(dir)?)),
        };
        let w = weights::load(&cfg, src.as_mut(), &backend, &mut |done| progress(done, total))?;
        Model::new(cfg, backend, w)
    }
}

/// Open and load in one call.
pub fn load_model<B: Backend>(path: &Path, backend: B) -> Result<Model<B>> {
    if !path.exists() {
        return Err(ModelError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} does not exist", path.display()))));
    }
    ModelFile::open(path)?.load(backend, &mut |_, _| {})
}
