//! Shared server state: configuration, the loaded model (once ready) and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrum_engine::runner::Engine;
use ferrum_text::{ChatOptions, ChatTemplate, Tokenizer};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Everything serving needs once the model is loaded.
pub struct ModelBundle {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Names a request's `model` may use; the first is the one listed.
    pub names: Vec<String>,
    /// Time spent loading weights (for the startup line).
    pub load_time: Duration,
}

/// Builds the model bundle; runs on a blocking thread after the listener is bound.
pub type Loader = Box<dyn FnOnce() -> Result<ModelBundle, String> + Send>;

impl ModelBundle {
    pub fn name(&self) -> &str {
        self.names.first().map_or("model", |s| s.as_str())
    }

    /// Checks a request's `model` field (absent or empty: the served model).
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            None | Some("") => Ok(()),
            Some(m) if self.names.iter().any(|n| n == m) => Ok(()),
            Some(m) => Err(ApiError::model_not_found(m, self.name())),
        }
    }

    /// Whether the chat template has a thinking block (`<think>`).
    pub fn thinks(&self) -> bool {
        self.template.as_ref().is_some_and(|t| t.source().contains("<think>"))
    }

    /// Token ids of raw text: special tokens parsed, BOS when the model's
    /// metadata asks for it.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        let mut ids = self.tokenizer.encode(text, true, false).map_err(|e| ApiError::invalid(Some("prompt".into()), format!("prompt: {e}")))?;
        if let Some(bos) = self.tokenizer.bos_id().filter(|_| self.tokenizer.add_bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Renders chat messages with the template; returns the prompt text.
    pub fn render_chat(&self, messages: &[serde_json::Value], opts: &ChatOptions) -> Result<String, ApiError> {
        let t = self.template.as_ref().ok_or_else(|| ApiError::invalid(Some("messages".into()), "this model has no chat template: use /v1/completions, or start the server with --chat-template FILE"))?;
        t.render(messages, opts).map_err(|e| ApiError::invalid(Some("messages".into()), format!("rendering the chat template: {e}")))
    }
}

pub enum Phase {
    Loading,
    Ready(Arc<ModelBundle>),
    Failed(String),
}

pub struct AppState {
    pub phase: RwLock<Phase>,
    pub metrics: Metrics,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub shutting_down: AtomicBool,
    /// Shown by `/v1/models` and errors while loading.
    pub model_label: String,
}

impl AppState {
    pub fn new(model_label: String, api_key: Option<String>, max_body_bytes: usize) -> Self {
        AppState { phase: RwLock::new(Phase::Loading), metrics: Metrics::new(), api_key, max_body_bytes, shutting_down: AtomicBool::new(false), model_label }
    }

    /// The model, or 503 while loading / after a failed load / when shutting down.
    pub fn ready(&self) -> Result<Arc<ModelBundle>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        match &*self.phase.read().map_err(|_| ApiError::internal("server state lock poisoned"))? {
            Phase::Ready(m) => Ok(m.clone()),
            Phase::Loading => Err(ApiError::unavailable(format!("the model {} is still loading", self.model_label))),
            Phase::Failed(e) => Err(ApiError::unavailable(format!("the model failed to load: {e}"))),
        }
    }

    /// The model if loaded, even while shutting down.
    pub fn bundle(&self) -> Option<Arc<ModelBundle>> {
        match &*self.phase.read().ok()? {
            Phase::Ready(m) => Some(m.clone()),
            _ => None,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        if let Ok(mut g) = self.phase.write() {
            *g = p;
        }
    }
}
