//! `POST /v1/completions`: prompts as text or token ids, `echo`, integer `logprobs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use ferrum_engine::sampler::{Sampled, MAX_LOGPROBS};
use serde_json::{json, Value};

use crate::choice::ChoiceMsg;
use crate::error::ApiError;
use crate::generate::{self, PromptJob, Running, Usage};
use crate::params::{gen_params, GenParams};
use crate::protocol::{fields, parse_object, prompts, CommonParams, CompletionParams, PromptInput};
use crate::routes::read_body;
use crate::state::{AppState, ModelBundle};

/// A prompt ready to run, with what echo shows of it.
struct Prompt {
    ids: Vec<u32>,
    text: String,
}

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let bundle = state.ready()?;
    let bytes = read_body(body, state.max_body_bytes).await?;
    let v = parse_object(&bytes)?;
    if v.get("prompt").is_none() {
        return Err(ApiError::param("prompt", "is required"));
    }
    let common: CommonParams = fields(&v)?;
    let cp: CompletionParams = fields(&v)?;
    bundle.check_model(common.model.as_deref())?;
    if cp.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::param("suffix", "is not supported"));
    }
    let logprobs = match cp.logprobs {
        None => None,
        Some(k) if (0..=MAX_LOGPROBS as i64).contains(&k) => Some(k as usize),
        Some(k) => return Err(ApiError::param("logprobs", format!("{k} is out of range (0 to {MAX_LOGPROBS})"))),
    };
    let gp = gen_params(&common, ("max_tokens", common.max_tokens.or(Some(16))), logprobs.unwrap_or(0), bundle.engine.vocab_size())?;
    if cp.best_of.is_some_and(|b| b != gp.n as i64) {
        return Err(ApiError::param("best_of", "is not supported (only best_of = n)"));
    }
    let echo = cp.echo.unwrap_or(false);
    let inputs = prompts(&cp.prompt)?;
    let b = bundle.clone();
    let prompts: Vec<Prompt> = tokio::task::spawn_blocking(move || -> Result<Vec<Prompt>, ApiError> {
        inputs
            .into_iter()
            .map(|p| match p {
                PromptInput::Text(t) => Ok(Prompt { ids: b.encode_text(&t)?, text: t }),
                PromptInput::Tokens(ids) => {
                    let text = if echo { b.tokenizer.decode(&ids, false).map_err(|e| ApiError::param("prompt", e))? } else { String::new() };
                    Ok(Prompt { ids, text })
                }
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing: {e}")))??;
    let jobs = prompts.iter().map(|p| PromptJob { tokens: p.ids.clone(), prompt_logprobs: logprobs.filter(|_| echo), reasoning: None }).collect();
    let run = generate::submit(&state, &bundle, jobs, &gp, "prompt")?;
    let id = generate::response_id("cmpl");
    let out = Output { bundle: bundle.clone(), prompts, echo, logprobs: logprobs.is_some(), n: gp.n };
    if gp.stream {
        return Ok(stream(out, run, id, gp).into_response());
    }
    let (choices, usage) = generate::collect(run).await?;
    // Prompt log-probabilities arrive once per prompt; every choice of it shows them.
    let mut scored: HashMap<usize, Vec<Option<Sampled>>> = HashMap::new();
    for (i, c) in choices.iter().enumerate() {
        if let Some(lp) = &c.prompt_logprobs {
            scored.insert(i / gp.n, lp.clone());
        }
    }
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = i / gp.n;
            let text = if echo { format!("{}{}", out.prompts[p].text, c.content) } else { c.content.clone() };
            json!({
                "index": i,
                "text": text,
                "logprobs": out.logprobs_json(p, scored.get(&p).map(|v| v.as_slice()), &c.tokens),
                "finish_reason": c.end.map(|e| e.finish_reason),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "id": id,
        "object": "text_completion",
        "created": generate::unix_now(),
        "model": bundle.name(),
        "choices": choices,
        "usage": usage.json(),
    }))
    .into_response())
}

struct Output {
    bundle: Arc<ModelBundle>,
    prompts: Vec<Prompt>,
    echo: bool,
    logprobs: bool,
    n: usize,
}

impl Output {
    /// The `logprobs` object of prompt `p`'s choice: the scored prompt
    /// (echo) followed by the generated tokens; `null` when not asked for.
    fn logprobs_json(&self, p: usize, prompt_lp: Option<&[Option<Sampled>]>, tokens: &[Sampled]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let mut entries: Vec<Option<Sampled>> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        if let (true, Some(lp)) = (self.echo, prompt_lp) {
            entries.extend(lp.iter().cloned());
            ids.extend(&self.prompts[p].ids);
        }
        entries.extend(tokens.iter().cloned().map(Some));
        ids.extend(tokens.iter().map(|s| s.id));
        generate::completion_logprobs(&self.bundle.tokenizer, &entries, &ids, 0)
    }
}

fn stream(out: Output, mut run: Running, id: String, gp: GenParams) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let created = generate::unix_now();
    let model = out.bundle.name().to_string();
    let include_usage = gp.include_usage;
    let s = async_stream::stream! {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut c = json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices});
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            SseEvent::default().data(c.to_string())
        };
        let text_chunk = |i: usize, text: &str, lp: Value| chunk(json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]), None);
        // Echo without prompt scoring is shown at once; with it, when the scores arrive.
        if out.echo && !out.logprobs {
            for i in 0..run.n_choices {
                yield Ok(text_chunk(i, &out.prompts[i / out.n].text, Value::Null));
            }
        }
        let mut usage = Usage { prompt_tokens: run.prompt_tokens, ..Default::default() };
        let mut done = 0;
        while done < run.n_choices {
            let Some((i, msg)) = run.rx.recv().await else { break };
            match msg {
                ChoiceMsg::PromptLogprobs(lp) => {
                    let p = i / out.n;
                    yield Ok(text_chunk(i, &out.prompts[p].text, out.logprobs_json(p, Some(&lp), &[])));
                }
                ChoiceMsg::Delta { content, tokens, .. } => {
                    if content.is_empty() && (!out.logprobs || tokens.is_empty()) {
                        continue;
                    }
                    let lp = if out.logprobs {
                        let entries: Vec<Option<Sampled>> = tokens.iter().cloned().map(Some).collect();
                        let ids: Vec<u32> = tokens.iter().map(|s| s.id).collect();
                        generate::completion_logprobs(&out.bundle.tokenizer, &entries, &ids, 0)
                    } else {
                        Value::Null
                    };
                    yield Ok(text_chunk(i, &content, lp));
                }
                ChoiceMsg::Done(end) => {
                    usage.add(&end);
                    done += 1;
                    yield Ok(chunk(json!([{"index": i, "text": "", "logprobs": null, "finish_reason": end.finish_reason}]), None));
                }
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
