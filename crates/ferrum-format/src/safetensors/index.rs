//! `model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {tensor: shard_file}}`.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::SafetensorsError;

/// The parsed shard index. `metadata` (e.g. `total_size`) is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIndex {
    /// tensor name → shard file name (relative to the index's directory).
    pub weight_map: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawIndex {
    weight_map: Option<BTreeMap<String, String>>,
}

impl ShardIndex {
    pub fn from_file(path: &Path) -> Result<Self, SafetensorsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SafetensorsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses index JSON text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SafetensorsError> {
        let bad = |reason: String| SafetensorsError::BadIndex {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawIndex =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let weight_map = raw
            .weight_map
            .ok_or_else(|| bad("missing key 'weight_map'".to_string()))?;
        if weight_map.is_empty() {
            return Err(bad("'weight_map' is empty".to_string()));
        }
        for (tensor, shard) in &weight_map {
            // Shards must be plain files beside the index: no absolute paths,
            // no `..`, no sub-directories.
            let mut comps = Path::new(shard).components();
            let plain =
                matches!(comps.next(), Some(Component::Normal(_))) && comps.next().is_none();
            if !plain {
                return Err(bad(format!(
                    "tensor '{tensor}' maps to shard '{shard}', which is not a plain file name"
                )));
            }
        }
        Ok(Self { weight_map })
    }

    /// Distinct shard file names, sorted (HF names them `model-0000i-of-0000n`).
    pub fn shard_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.weight_map.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}
