//! The model's chat template and the prompt tokens of a conversation.

use anyhow::{Context, Result};
use ferrum_model::load::ModelFile;
use ferrum_text::{ChatOptions, ChatTemplate, Tokenizer};

/// The chat template of a model file: GGUF `tokenizer.chat_template`, or a
/// Hugging Face directory's `tokenizer_config.json` / `chat_template.jinja`.
/// BOS/EOS strings come from the tokenizer when the source does not name them.
pub fn load_template(file: &ModelFile, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
    let t = match file {
        ModelFile::Gguf(g) => ChatTemplate::from_gguf(g)?,
        ModelFile::Hf { dir, .. } => {
            let cfg = dir.join("tokenizer_config.json");
            if cfg.is_file() {
                ChatTemplate::from_tokenizer_config(&cfg, false)?
            } else {
                match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                    Ok(s) => Some(ChatTemplate::new(s)?),
                    Err(_) => None,
                }
            }
        }
    };
    let Some(mut t) = t else { return Ok(None) };
    let spelling = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    if t.bos_token.is_empty() {
        t.bos_token = spelling(tok.bos_id());
    }
    if t.eos_token.is_empty() {
        t.eos_token = spelling(tok.eos_ids().first().copied());
    }
    Ok(Some(t))
}

/// Token ids of `messages` rendered with a generation prompt. Special
/// tokens in the rendered text are parsed; BOS is added when the model's
/// metadata asks for it and the template did not write it.
pub fn encode_conversation(
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[serde_json::Value],
    enable_thinking: Option<bool>,
) -> Result<Vec<u32>> {
    let opts = ChatOptions {
        add_generation_prompt: true,
        enable_thinking,
        ..Default::default()
    };
    let text = tmpl
        .render(messages, &opts)
        .context("rendering the chat template")?;
    let mut ids = tok.encode(&text, true, false)?;
    if let Some(bos) = tok.bos_id().filter(|_| tok.add_bos()) {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    Ok(ids)
}

/// Token ids of raw text: special tokens parsed, BOS only when the model's
/// metadata says so (never EOS).
pub fn encode_raw(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text, true, false)?;
    if let Some(bos) = tok.bos_id().filter(|_| tok.add_bos()) {
        ids.insert(0, bos);
    }
    Ok(ids)
}

pub fn message(role: &str, content: &str) -> serde_json::Value {
    serde_json::json!({"role": role, "content": content})
}
