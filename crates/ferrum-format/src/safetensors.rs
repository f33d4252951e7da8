//! Memory-mapped safetensors checkpoints: one `.safetensors` file or a sharded
//! set described by `model.safetensors.index.json`.
//!
//! Every file's header is parsed and validated (offsets contiguous, sizes equal
//! to `shape × dtype`, data region exactly filling the file) by the
//! `safetensors` crate when the checkpoint is opened; tensor bytes stay in the
//! mappings and are only read on access.
//!
//! Dtype policy: only F32, F16 and BF16 tensors are usable. A checkpoint that
//! also holds tensors of other dtypes (I64 `position_ids` buffers in older BERT
//! exports, F64, I8, ...) still opens — those tensors are listed by
//! [`SafeTensors::unsupported`] — and asking for one through
//! [`SafeTensors::tensor`] or [`SafeTensors::to_f32`] returns
//! [`SafetensorsError::UnsupportedDtype`] naming the tensor and its dtype.
//! [`SafeTensors::get`] is the `Option` form and returns `None` for them.

mod index;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ferrum_core::DType;
use memmap2::Mmap;

pub use index::ShardIndex;

/// Errors from opening or reading a safetensors checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("safetensors: cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("safetensors: {path}: invalid file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "safetensors: directory {0} holds neither model.safetensors nor model.safetensors.index.json"
    )]
    NoCheckpoint(PathBuf),
    #[error("safetensors: index {path}: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("safetensors: index {index} names shard {shard}, which does not exist")]
    MissingShard { index: PathBuf, shard: PathBuf },
    #[error("safetensors: index {index} places tensor '{tensor}' in {shard}, but that shard does not contain it")]
    TensorMissingFromShard {
        index: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("safetensors: tensor '{tensor}' appears in two shards: {first} and {second}")]
    DuplicateTensor {
        tensor: String,
        first: String,
        second: String,
    },
    #[error("safetensors: shard {shard} holds tensor '{tensor}', which index {index} does not list for that shard")]
    UnlistedTensor {
        index: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("safetensors: no tensor named '{0}'")]
    NotFound(String),
    #[error(
        "safetensors: tensor '{tensor}' has dtype {dtype}; only F32, F16 and BF16 are supported"
    )]
    UnsupportedDtype { tensor: String, dtype: String },
}

/// A borrowed view of one tensor's little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorView<'a> {
    pub dtype: DType,
    /// Row-major shape, outermost dimension first (as PyTorch writes it).
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size()` bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where one tensor lives: which mapping, which byte range, and its type.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    /// `Err(name)` for dtypes Ferrum does not read (kept so the error can name it).
    dtype: Result<DType, String>,
    shape: Vec<usize>,
    /// Absolute byte range inside the mapped file.
    start: usize,
    end: usize,
}

/// One or many memory-mapped safetensors files presented as one name space.
pub struct SafeTensors {
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("files", &self.files)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl SafeTensors {
    /// Opens `path`: a `.safetensors` file, a `*.index.json` shard index, or a
    /// directory holding `model.safetensors.index.json` (preferred) or
    /// `model.safetensors`.
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join("model.safetensors");
            if single.is_file() {
                return Self::open_files(&[single]);
            }
            return Err(SafetensorsError::NoCheckpoint(path.to_path_buf()));
        }
        let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
        if is_json {
            return Self::open_index(path);
        }
        Self::open_files(&[path.to_path_buf()])
    }

    /// Opens a sharded checkpoint from its index JSON, checking that every
    /// listed shard exists, every listed tensor is in its shard, no tensor is
    /// in two shards and no shard holds a tensor the index does not list there.
    pub fn open_index(index_path: &Path) -> Result<Self, SafetensorsError> {
        let index = ShardIndex::from_file(index_path)?;
        let dir = index_path.parent().unwrap_or_else(|| Path::new("."));
        let shard_names = index.shard_names();
        let mut shard_paths = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            let p = dir.join(name);
            if !p.is_file() {
                return Err(SafetensorsError::MissingShard {
                    index: index_path.to_path_buf(),
                    shard: p,
                });
            }
            shard_paths.push(p);
        }
        let st = Self::open_files(&shard_paths)?;
        // Index → shards: each listed tensor must be where the index says.
        for (tensor, shard) in &index.weight_map {
            let listed_at = shard_names.iter().position(|s| s == shard);
            let found = st.entries.get(tensor).map(|e| e.file);
            if found.is_none() || found != listed_at {
                return Err(SafetensorsError::TensorMissingFromShard {
                    index: index_path.to_path_buf(),
                    tensor: tensor.clone(),
                    shard: shard.clone(),
                });
            }
        }
        // Shards → index: nothing beyond what the index lists.
        for (tensor, e) in &st.entries {
            if !index.weight_map.contains_key(tensor) {
                return Err(SafetensorsError::UnlistedTensor {
                    index: index_path.to_path_buf(),
                    tensor: tensor.clone(),
                    shard: shard_names.get(e.file).cloned().unwrap_or_default(),
                });
            }
        }
        Ok(st)
    }

    /// Maps and validates each file, merging their tensors into one name
    /// space; a name in two files is an error.
    fn open_files(paths: &[PathBuf]) -> Result<Self, SafetensorsError> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (file_idx, path) in paths.iter().enumerate() {
            let map = map_file(path)?;
            let (header_len, meta) =
                ::safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                    SafetensorsError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
            // Data starts after the 8-byte length prefix and the JSON header.
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let entry = Entry {
                    file: file_idx,
                    dtype: convert_dtype(info.dtype),
                    shape: info.shape.clone(),
                    start: base + s,
                    end: base + e,
                };
                if let Some(prev) = entries.get(&name) {
                    return Err(SafetensorsError::DuplicateTensor {
                        tensor: name,
                        first: display_name(&paths[prev.file]),
                        second: display_name(path),
                    });
                }
                entries.insert(name, entry);
            }
            maps.push(map);
        }
        Ok(Self {
            files: paths.to_vec(),
            maps,
            entries,
        })
    }

    /// The files backing this checkpoint, in shard order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// All tensor names (including unsupported-dtype ones), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// `(name, dtype)` of every tensor whose dtype is not F32/F16/BF16, sorted.
    pub fn unsupported(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|(n, e)| e.dtype.as_ref().err().map(|d| (n.as_str(), d.as_str())))
            .collect()
    }

    /// The tensor, or `None` when absent or of an unsupported dtype
    /// (use [`Self::tensor`] for the reason).
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor(name).ok()
    }

    /// The tensor, or an error naming it when absent or of an unsupported dtype.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| SafetensorsError::NotFound(name.to_string()))?;
        let dtype = e
            .dtype
            .clone()
            .map_err(|d| SafetensorsError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: d,
            })?;
        // The ranges were validated against the file length at open time.
        let data = self
            .maps
            .get(e.file)
            .and_then(|m| m.get(e.start..e.end))
            .ok_or_else(|| SafetensorsError::Invalid {
                path: self.files.get(e.file).cloned().unwrap_or_default(),
                reason: format!(
                    "tensor '{name}' byte range {}..{} out of file",
                    e.start, e.end
                ),
            })?;
        Ok(TensorView {
            dtype,
            shape: e.shape.clone(),
            data,
        })
    }

    /// The tensor's elements as f32 (F16 and BF16 are widened exactly).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, SafetensorsError> {
        let t = self.tensor(name)?;
        Ok(bytes_to_f32(t.dtype, t.data))
    }
}

/// Widens little-endian F32/F16/BF16 bytes to f32; a trailing partial element
/// (impossible for validated tensors) is ignored.
pub fn bytes_to_f32(dtype: DType, data: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

fn convert_dtype(d: ::safetensors::Dtype) -> Result<DType, String> {
    match d {
        ::safetensors::Dtype::F32 => Ok(DType::F32),
        ::safetensors::Dtype::F16 => Ok(DType::F16),
        ::safetensors::Dtype::BF16 => Ok(DType::BF16),
        other => Err(other.to_string()),
    }
}

fn map_file(path: &Path) -> Result<Mmap, SafetensorsError> {
    let io = |source| SafetensorsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the mapping is read-only; like every mmap-based weight loader we
    // rely on the checkpoint not being truncated or rewritten while open.
    unsafe { Mmap::map(&file) }.map_err(io)
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
