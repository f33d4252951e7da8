//! Pre-tokenizer split regexes for byte-level BPE vocabularies, chosen by the
//! GGUF `tokenizer.ggml.pre` name exactly as llama.cpp chooses them.
//!
//! Each entry is a list of regexes applied in turn (each one splits the
//! pieces left by the previous one, matches and gaps both kept) — the same
//! as a `Sequence` of `Split(regex, Isolated)` pre-tokenizers. The
//! contraction alternatives are spelled with explicit case classes
//! (`'[sS]`) as llama.cpp does, not with `(?i:...)`: under Unicode case
//! folding `(?i:'s)` would also match `'ſ` (U+017F), which llama.cpp does not.

/// GPT-2's original split.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Qwen2 / Qwen2.5 / Qwen3 (single digits).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3 (digits in runs of up to three).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's fallback for byte-level vocabularies without a known `pre`.
const DEFAULT: [&str; 4] = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];

/// How a byte-level BPE vocabulary is pre-tokenized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreTokenizerSpec {
    /// Split regexes, applied in order.
    pub regexes: Vec<&'static str>,
    /// Emit a whole pre-token when it is itself in the vocabulary, without
    /// running merges (Llama 3's `ignore_merges`).
    pub ignore_merges: bool,
    /// Whether llama.cpp adds BOS when the file has no `add_bos_token` key.
    pub add_bos_default: bool,
}

/// Names accepted for `tokenizer.ggml.pre`, grouped by the split they select.
const NAMES: [(&[&str], &str); 4] = [
    (&["default"], "default"),
    (&["gpt-2", "phi-2"], "gpt2"),
    (&["qwen2", "deepseek-r1-qwen", "megrez"], "qwen2"),
    (&["llama-bpe", "llama3", "llama-v3", "falcon3"], "llama3"),
];

/// Every accepted `pre` name, comma-separated (for error messages).
pub fn supported_names() -> String {
    NAMES
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The split for `pre`; `None` (key absent) selects llama.cpp's default
/// split, an unknown name returns `None` so the caller can list the known ones.
pub fn spec_for(pre: Option<&str>) -> Option<PreTokenizerSpec> {
    let family = match pre {
        None => "default",
        Some(name) => NAMES
            .iter()
            .find(|(names, _)| names.contains(&name))
            .map(|(_, family)| *family)?,
    };
    let spec = match family {
        "gpt2" => PreTokenizerSpec {
            regexes: vec![GPT2],
            ignore_merges: false,
            add_bos_default: false,
        },
        "qwen2" => PreTokenizerSpec {
            regexes: vec![QWEN2],
            ignore_merges: false,
            add_bos_default: false,
        },
        "llama3" => PreTokenizerSpec {
            regexes: vec![LLAMA3],
            ignore_merges: true,
            add_bos_default: true,
        },
        _ => PreTokenizerSpec {
            regexes: DEFAULT.to_vec(),
            ignore_merges: false,
            add_bos_default: false,
        },
    };
    Some(spec)
}
