//! `ferrum serve`: an OpenAI-compatible HTTP server (axum) over the engine
//! runner. `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/health`, `/metrics`; SSE streaming; errors in OpenAI's JSON shape.
//! See docs/serving.md.

mod chat;
mod choice;
mod completions;
pub mod error;
mod generate;
pub mod metrics;
pub mod params;
pub mod protocol;
pub mod reasoning;
mod routes;
mod server;
pub mod state;

pub use error::ApiError;
pub use server::{run, serve, start, RunningServer, ServerConfig, ServerError};
pub use state::{AppState, Loader, ModelBundle};
