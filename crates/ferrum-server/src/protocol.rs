//! Request bodies of the OpenAI API, parsed from JSON into typed structs.
//! Fields of the wrong type are reported with their path (`stop[1]`,
//! `messages[0].role`); unknown fields are ignored, as OpenAI's SDKs send
//! `extra_body` fields at the top level.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A string or a list of strings (`stop`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by chat and text completions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CommonParams {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f64>>,
    // Extensions (vLLM's names).
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// `/v1/chat/completions` fields beyond the common ones.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatParams {
    pub messages: Vec<Value>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub chat_template_kwargs: Option<Map<String, Value>>,
}

/// `/v1/completions` fields beyond the common ones.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionParams {
    pub prompt: Value,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub best_of: Option<i64>,
}

/// Parses the body into JSON; anything but an object is refused.
pub fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(None, format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::invalid(None, "the request body must be a JSON object"));
    }
    Ok(v)
}

/// Deserializes `T` from `v`, naming the offending field on error.
pub fn fields<T: DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            ApiError::invalid(None, inner)
        } else {
            ApiError::invalid(Some(path.clone()), format!("{path}: {inner}"))
        }
    })
}

/// A prompt of `/v1/completions`: text, or token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// `prompt` as a string, a list of strings, a list of token ids, or a list
/// of token-id lists.
pub fn prompts(v: &Value) -> Result<Vec<PromptInput>, ApiError> {
    let bad = |why: &str| ApiError::param("prompt", format!("{why}; expected a string, a list of strings, a list of token ids or a list of token-id lists"));
    let ids = |list: &[Value]| -> Result<Vec<u32>, ApiError> {
        list.iter().map(|t| t.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| bad(&format!("{t} is not a token id")))).collect()
    };
    match v {
        Value::String(s) => Ok(vec![PromptInput::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => Err(bad("the list is empty")),
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|x| x.as_str().map(|s| PromptInput::Text(s.to_string())).ok_or_else(|| bad("mixed list")))
                .collect(),
            Value::Number(_) => Ok(vec![PromptInput::Tokens(ids(items)?)]),
            Value::Array(_) => items
                .iter()
                .map(|x| match x {
                    Value::Array(l) => ids(l).map(PromptInput::Tokens),
                    _ => Err(bad("mixed list")),
                })
                .collect(),
            other => Err(bad(&format!("found {other}"))),
        },
        Value::Null => Err(ApiError::param("prompt", "is required")),
        other => Err(bad(&format!("found {other}"))),
    }
}

/// Checks the chat messages and flattens content parts into strings (what
/// chat templates expect).
pub fn normalize_messages(messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::param("messages", "must contain at least one message"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let Some(obj) = m.as_object() else {
            return Err(ApiError::invalid(Some(format!("messages[{i}]")), format!("messages[{i}]: expected an object")));
        };
        let role = match obj.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(_) => return Err(ApiError::invalid(Some(at("role")), format!("{}: expected a string", at("role")))),
            None => return Err(ApiError::invalid(Some(at("role")), format!("{} is required", at("role")))),
        };
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(Some(at("role")), format!("{}: unknown role `{role}`", at("role"))));
        }
        let mut msg = obj.clone();
        // The `developer` role of newer OpenAI models is a system message here.
        if role == "developer" {
            msg.insert("role".into(), Value::String("system".into()));
        }
        match obj.get("content") {
            None | Some(Value::Null) if role == "assistant" => {}
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            let path = format!("messages[{i}].content[{j}]");
                            return Err(ApiError::invalid(Some(path.clone()), format!("{path}: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported")));
                        }
                    }
                }
                msg.insert("content".into(), Value::String(text));
            }
            Some(_) => return Err(ApiError::invalid(Some(at("content")), format!("{}: expected a string or a list of text parts", at("content")))),
            None => return Err(ApiError::invalid(Some(at("content")), format!("{} is required", at("content")))),
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}
