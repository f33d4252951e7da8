//! The router: OpenAI endpoints under `/v1` (behind the API key when one is
//! set), `/health`, `/metrics`, and JSON errors for everything else.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::state::{AppState, Phase};
use crate::{chat, completions, generate};

pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The only error besides the limit is a broken connection.
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit")) || e.to_string().contains("length limit");
        if too_large {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(None, format!("reading the request body: {e}"))
        }
    })
}

/// `Authorization: Bearer KEY` on `/v1/*` when the server has a key.
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let bundle = state.ready()?;
    let data: Vec<_> = bundle
        .names
        .iter()
        .take(1)
        .map(|n| {
            json!({
                "id": n,
                "object": "model",
                "created": generate::unix_now(),
                "owned_by": "ferrum",
                "max_model_len": bundle.engine.config().max_model_len,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// 200 when ready; 503 while loading, after a failed load, or when shutting down.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting_down"}))).into_response();
    }
    let phase = state.phase.read();
    match phase.as_deref() {
        Ok(Phase::Ready(_)) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Ok(Phase::Loading) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
        Ok(Phase::Failed(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failed", "error": e}))).into_response(),
        Err(_) => ApiError::internal("server state lock poisoned").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.bundle().map(|b| b.engine.stats());
    let text = state.metrics.render(stats);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn fallback(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.uri().path())).with_code("not_found")
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::invalid(None, format!("method {} is not allowed on {}", req.method(), req.uri().path())).with_status(StatusCode::METHOD_NOT_ALLOWED)
}
