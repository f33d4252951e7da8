//! Models from the Hugging Face hub, through the `hf-hub` crate and its
//! standard cache (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`).
//! A cached file is used without any network access; `HF_HUB_OFFLINE=1`
//! forbids the network altogether; `HF_ENDPOINT` points at a mirror.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

/// `owner/name` with an optional `:FILE` (a file name, or a quantization
/// tag such as `q8_0` picking the GGUF file that contains it).
#[derive(Clone, Debug, PartialEq)]
pub struct RepoSpec {
    pub repo: String,
    pub file: Option<String>,
}

impl RepoSpec {
    pub fn parse(s: &str) -> Option<RepoSpec> {
        let (repo, file) = match s.split_once(':') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let (owner, name) = repo.split_once('/')?;
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (ok(owner) && ok(name)).then(|| RepoSpec {
            repo: repo.to_string(),
            file,
        })
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A local path for `spec`: from the cache when there, else downloaded.
pub fn fetch(spec: &RepoSpec) -> Result<PathBuf> {
    let cache = Cache::from_env();
    let repo = Repo::model(spec.repo.clone());
    if let Some(p) = from_cache(&cache, &repo, spec) {
        return Ok(p);
    }
    if offline() {
        bail!(
            "{} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE=1 forbids downloading",
            spec.repo,
            cache.path().display()
        );
    }
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("setting up the Hugging Face client")?;
    let api_repo = api.repo(repo);
    if let Some(f) = spec.file.as_deref().filter(|f| f.contains('.')) {
        return api_repo
            .get(f)
            .with_context(|| format!("downloading {f} from {}", spec.repo));
    }
    let info = api_repo
        .info()
        .with_context(|| format!("listing {}", spec.repo))?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if let Some(gguf) = pick_gguf(&names, spec.file.as_deref()) {
        return api_repo
            .get(&gguf)
            .with_context(|| format!("downloading {gguf} from {}", spec.repo));
    }
    if spec.file.is_some() {
        bail!(
            "{} has no GGUF file matching `{}`",
            spec.repo,
            spec.file.as_deref().unwrap_or_default()
        );
    }
    if !names.iter().any(|n| n == "config.json") {
        bail!("{} has neither GGUF files nor config.json", spec.repo);
    }
    let mut config = None;
    for n in names.iter().filter(|n| wanted_hf_file(n)) {
        let p = api_repo
            .get(n)
            .with_context(|| format!("downloading {n} from {}", spec.repo))?;
        if n == "config.json" {
            config = Some(p);
        }
    }
    let config = config.context("config.json was not downloaded")?;
    Ok(config.parent().map(Path::to_path_buf).unwrap_or(config))
}

/// The files of a safetensors checkpoint Ferrum reads.
fn wanted_hf_file(n: &str) -> bool {
    !n.contains('/')
        && (n.ends_with(".safetensors")
            || matches!(
                n,
                "config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "generation_config.json"
                    | "model.safetensors.index.json"
                    | "chat_template.jinja"
            ))
}

/// A GGUF file of the repo: one whose name contains `tag` when given, else
/// Q4_K_M, else the first; split files (`-00001-of-00002`) are not supported.
fn pick_gguf(names: &[String], tag: Option<&str>) -> Option<String> {
    let ggufs: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".gguf") && !n.contains("-of-"))
        .collect();
    let has = |n: &str, t: &str| n.to_ascii_lowercase().contains(&t.to_ascii_lowercase());
    match tag {
        Some(t) => ggufs.iter().find(|n| has(n, t)).map(|s| s.to_string()),
        None => ggufs
            .iter()
            .find(|n| has(n, "q4_k_m"))
            .or(ggufs.first())
            .map(|s| s.to_string()),
    }
}

/// The cached snapshot of `repo` (refs/main), if any.
fn snapshot_dir(cache: &Cache, repo: &Repo) -> Option<PathBuf> {
    let base = cache.path().join(repo.folder_name());
    let commit = std::fs::read_to_string(base.join("refs").join(repo.revision())).ok()?;
    let dir = base.join("snapshots").join(commit.trim());
    dir.is_dir().then_some(dir)
}

fn from_cache(cache: &Cache, repo: &Repo, spec: &RepoSpec) -> Option<PathBuf> {
    if let Some(f) = spec.file.as_deref().filter(|f| f.contains('.')) {
        return cache.repo(repo.clone()).get(f);
    }
    let dir = snapshot_dir(cache, repo)?;
    let names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if let Some(g) = pick_gguf(&names, spec.file.as_deref()) {
        return Some(dir.join(g));
    }
    (spec.file.is_none() && names.iter().any(|n| n == "config.json")).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs() {
        assert_eq!(
            RepoSpec::parse("Qwen/Qwen3-0.6B-GGUF"),
            Some(RepoSpec {
                repo: "Qwen/Qwen3-0.6B-GGUF".into(),
                file: None
            })
        );
        let s = RepoSpec::parse("Qwen/Qwen3-0.6B-GGUF:Qwen3-0.6B-Q8_0.gguf").unwrap();
        assert_eq!(s.file.as_deref(), Some("Qwen3-0.6B-Q8_0.gguf"));
        assert_eq!(RepoSpec::parse("qwen3:0.6b"), None);
        assert_eq!(RepoSpec::parse("a/b:"), None);
        assert_eq!(RepoSpec::parse("a/../b"), None);
    }

    #[test]
    fn gguf_choice() {
        let names: Vec<String> = [
            "README.md",
            "m-Q8_0.gguf",
            "m-Q4_K_M.gguf",
            "big-q4_k_m-00001-of-00002.gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(pick_gguf(&names, None).as_deref(), Some("m-Q4_K_M.gguf"));
        assert_eq!(
            pick_gguf(&names, Some("q8_0")).as_deref(),
            Some("m-Q8_0.gguf")
        );
        assert_eq!(pick_gguf(&names, Some("f16")), None);
    }
}
