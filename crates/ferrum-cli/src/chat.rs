//! Rendering a one-turn conversation with the model's chat template.

use anyhow::{Context, Result};
use ferrum_model::load::ModelFile;

pub fn render(file: &ModelFile, system: Option<&str>, user: &str) -> Result<String> {
    let template = match file {
        ModelFile::Gguf(g) => g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string),
        ModelFile::Hf { dir, .. } => std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("chat_template").and_then(|t| t.as_str()).map(str::to_string)),
    }
    .context("the model has no chat template; use --raw")?;
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    messages.push(serde_json::json!({"role": "user", "content": user}));
    ferrum_text::chat::render(&template, &messages, true).context("rendering the chat template")
}
