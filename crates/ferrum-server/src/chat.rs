//! `POST /v1/chat/completions`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use ferrum_engine::sampler::MAX_LOGPROBS;
use ferrum_text::ChatOptions;
use serde_json::{json, Value};

use crate::choice::ChoiceMsg;
use crate::error::ApiError;
use crate::generate::{self, PromptJob, Running, Usage};
use crate::params::{gen_params, GenParams};
use crate::protocol::{fields, normalize_messages, parse_object, ChatParams, CommonParams};
use crate::routes::read_body;
use crate::state::{AppState, ModelBundle};

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let bundle = state.ready()?;
    let bytes = read_body(body, state.max_body_bytes).await?;
    let v = parse_object(&bytes)?;
    let common: CommonParams = fields(&v)?;
    let chat: ChatParams = fields(&v)?;
    bundle.check_model(common.model.as_deref())?;
    let messages = normalize_messages(&chat.messages)?;
    let top = match (chat.logprobs.unwrap_or(false), chat.top_logprobs) {
        (_, Some(k)) if k < 0 => return Err(ApiError::param("top_logprobs", format!("{k} is out of range (0 to {MAX_LOGPROBS})"))),
        (true, Some(k)) => k as usize,
        (false, Some(_)) => return Err(ApiError::param("top_logprobs", "requires logprobs to be true")),
        (_, None) => 0,
    };
    if top > MAX_LOGPROBS {
        return Err(ApiError::param("top_logprobs", format!("{top} is out of range (0 to {MAX_LOGPROBS})")));
    }
    let want_logprobs = chat.logprobs.unwrap_or(false);
    let max = match chat.max_completion_tokens {
        Some(m) => ("max_completion_tokens", Some(m)),
        None => ("max_tokens", common.max_tokens),
    };
    let gp = gen_params(&common, max, top, bundle.engine.vocab_size())?;

    let mut kwargs = chat.chat_template_kwargs.clone().unwrap_or_default();
    let enable_thinking = match kwargs.remove("enable_thinking") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => return Err(ApiError::param("chat_template_kwargs.enable_thinking", "expected a boolean")),
    };
    let opts = ChatOptions { add_generation_prompt: true, enable_thinking, tools: chat.tools.clone(), extra: kwargs, ..Default::default() };
    let b = bundle.clone();
    let (text, tokens) = tokio::task::spawn_blocking(move || -> Result<(String, Vec<u32>), ApiError> {
        let text = b.render_chat(&messages, &opts)?;
        let tokens = b.encode_text(&text)?;
        Ok((text, tokens))
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing: {e}")))??;
    let reasoning = (bundle.thinks() && enable_thinking != Some(false)).then(|| text.trim_end().ends_with("<think>"));
    let job = PromptJob { tokens, prompt_logprobs: None, reasoning };
    let run = generate::submit(&state, &bundle, vec![job], &gp, "messages")?;
    let id = generate::response_id("chatcmpl");
    if gp.stream {
        Ok(stream(bundle, run, id, gp, want_logprobs).into_response())
    } else {
        let (choices, usage) = generate::collect(run).await?;
        let thinks = reasoning.is_some();
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = json!({"role": "assistant", "content": c.content});
                if thinks {
                    message["reasoning_content"] = if c.reasoning.is_empty() { Value::Null } else { json!(c.reasoning) };
                }
                json!({
                    "index": i,
                    "message": message,
                    "logprobs": if want_logprobs { generate::chat_logprobs(&bundle.tokenizer, &c.tokens) } else { Value::Null },
                    "finish_reason": c.end.map(|e| e.finish_reason),
                })
            })
            .collect();
        Ok(axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": generate::unix_now(),
            "model": bundle.name(),
            "choices": choices,
            "usage": usage.json(),
        }))
        .into_response())
    }
}

/// The SSE response: a role chunk per choice, content chunks, a finish
/// chunk per choice, the usage chunk if asked, then exactly one `[DONE]`.
fn stream(bundle: Arc<ModelBundle>, mut run: Running, id: String, gp: GenParams, want_logprobs: bool) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let created = generate::unix_now();
    let model = bundle.name().to_string();
    let include_usage = gp.include_usage;
    let s = async_stream::stream! {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            SseEvent::default().data(c.to_string())
        };
        for i in 0..run.n_choices {
            yield Ok(chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]), None));
        }
        let mut usage = Usage { prompt_tokens: run.prompt_tokens, ..Default::default() };
        let mut done = 0;
        while done < run.n_choices {
            let Some((i, msg)) = run.rx.recv().await else { break };
            match msg {
                ChoiceMsg::Delta { content, reasoning, tokens } => {
                    if content.is_empty() && reasoning.is_empty() && (!want_logprobs || tokens.is_empty()) {
                        continue;
                    }
                    let mut delta = serde_json::Map::new();
                    if !content.is_empty() || reasoning.is_empty() {
                        delta.insert("content".into(), json!(content));
                    }
                    if !reasoning.is_empty() {
                        delta.insert("reasoning_content".into(), json!(reasoning));
                    }
                    let lp = if want_logprobs { generate::chat_logprobs(&bundle.tokenizer, &tokens) } else { Value::Null };
                    yield Ok(chunk(json!([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": null}]), None));
                }
                ChoiceMsg::Done(end) => {
                    usage.add(&end);
                    done += 1;
                    yield Ok(chunk(json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": end.finish_reason}]), None));
                }
                ChoiceMsg::PromptLogprobs(_) => {}
                ChoiceMsg::Error(e) => {
                    let err = ApiError::internal(format!("generation failed: {e}"));
                    yield Ok(SseEvent::default().data(err.body().to_string()));
                    break;
                }
            }
        }
        if include_usage {
            yield Ok(chunk(json!([]), Some(usage.json())));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(s)
}
