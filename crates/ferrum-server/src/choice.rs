//! One choice of a request as an async task: engine events in (token ids),
//! text deltas out (detokenized, stop strings applied, reasoning split off),
//! latency metrics observed on the way. The task runs on the async
//! executor, overlapping the engine thread's next step. When the receiving
//! side goes away (client disconnect) or a stop string completes, the
//! engine stream is cancelled, which frees the sequence's blocks at once.

use std::sync::Arc;
use std::time::Instant;

use ferrum_engine::runner::{finish_reason_str, Event, RequestStream, TextOutput};
use ferrum_engine::sampler::Sampled;
use tokio::sync::mpsc;

use crate::reasoning::ReasoningSplitter;
use crate::state::{AppState, ModelBundle};

/// How a choice ended, with its token counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChoiceEnd {
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Clone, Debug)]
pub enum ChoiceMsg {
    PromptLogprobs(Vec<Option<Sampled>>),
    /// Text released by `tokens` (possibly empty while a character or a
    /// possible stop string is held back).
    Delta { content: String, reasoning: String, tokens: Vec<Sampled> },
    Done(ChoiceEnd),
    Error(String),
}

pub struct ChoiceSetup {
    pub index: usize,
    pub stops: Vec<String>,
    /// Set for thinking models: splits `<think>` blocks into reasoning.
    pub reasoning: Option<ReasoningSplitter>,
    pub arrival: Instant,
}

/// Spawns the task driving `stream`; its messages arrive on `tx` tagged with `setup.index`.
pub fn spawn(state: Arc<AppState>, bundle: Arc<ModelBundle>, stream: RequestStream, setup: ChoiceSetup, tx: mpsc::Sender<(usize, ChoiceMsg)>) {
    tokio::spawn(run(state, bundle, stream, setup, tx));
}

struct Timing {
    arrival: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn run(state: Arc<AppState>, bundle: Arc<ModelBundle>, mut stream: RequestStream, mut setup: ChoiceSetup, tx: mpsc::Sender<(usize, ChoiceMsg)>) {
    let index = setup.index;
    let tok = &bundle.tokenizer;
    let mut text = TextOutput::new(tok, &setup.stops, true);
    let mut timing = Timing { arrival: setup.arrival, first: None, last: None };
    let mut count = 0usize;
    let m = &state.metrics;
    loop {
        let ev = tokio::select! {
            _ = tx.closed() => {
                stream.cancel();
                m.disconnects.inc();
                m.finished("abort");
                return;
            }
            ev = stream.recv() => ev,
        };
        let msg = match ev {
            None => ChoiceMsg::Error("the engine stopped".into()),
            Some(Event::PromptLogprobs(lp)) => ChoiceMsg::PromptLogprobs(lp),
            Some(Event::Token(s)) => {
                let now = Instant::now();
                match timing.last {
                    None => m.ttft.observe(now.duration_since(timing.arrival).as_secs_f64()),
                    Some(prev) => m.itl.observe(now.duration_since(prev).as_secs_f64()),
                }
                timing.first.get_or_insert(now);
                timing.last = Some(now);
                count += 1;
                let d = match text.push(tok, s.id) {
                    Ok(d) => d,
                    Err(e) => {
                        stream.cancel();
                        let _ = tx.send((index, ChoiceMsg::Error(format!("detokenizing: {e}")))).await;
                        return;
                    }
                };
                let (content, reasoning) = split(&mut setup.reasoning, &d.text);
                let delta = ChoiceMsg::Delta { content, reasoning, tokens: vec![s] };
                if d.stopped {
                    // A stop string: the request is over; free its blocks now.
                    stream.cancel();
                    if tx.send((index, delta)).await.is_err() {
                        return;
                    }
                    let end = ChoiceEnd { finish_reason: "stop", prompt_tokens: stream.prompt_len(), cached_tokens: 0, completion_tokens: count };
                    finish(&state, &timing, count, "stop");
                    let _ = tx.send((index, ChoiceMsg::Done(end))).await;
                    return;
                }
                delta
            }
            Some(Event::Finished(info)) => {
                let tail = text.finish();
                let (mut content, mut reasoning) = split(&mut setup.reasoning, &tail.text);
                if let Some(r) = setup.reasoning.as_mut() {
                    let rest = r.finish();
                    content.push_str(&rest.content);
                    reasoning.push_str(&rest.reasoning);
                }
                let has_text = !content.is_empty() || !reasoning.is_empty();
                if has_text && tx.send((index, ChoiceMsg::Delta { content, reasoning, tokens: Vec::new() })).await.is_err() {
                    return;
                }
                let reason = if tail.stopped { "stop" } else { finish_reason_str(info.reason) };
                finish(&state, &timing, count, reason);
                let end = ChoiceEnd { finish_reason: reason, prompt_tokens: info.prompt_tokens, cached_tokens: info.cached_tokens, completion_tokens: count };
                let _ = tx.send((index, ChoiceMsg::Done(end))).await;
                return;
            }
            Some(Event::Error(e)) => ChoiceMsg::Error(e),
        };
        let last = matches!(msg, ChoiceMsg::Error(_));
        if tx.send((index, msg)).await.is_err() {
            stream.cancel();
            m.disconnects.inc();
            m.finished("abort");
            return;
        }
        if last {
            m.finished("error");
            return;
        }
    }
}

/// Routes released text to content or reasoning.
fn split(r: &mut Option<ReasoningSplitter>, text: &str) -> (String, String) {
    match r {
        None => (text.to_string(), String::new()),
        Some(r) => {
            let s = r.push(text);
            (s.content, s.reasoning)
        }
    }
}

fn finish(state: &AppState, t: &Timing, count: usize, reason: &str) {
    let m = &state.metrics;
    let now = Instant::now();
    m.e2e.observe(now.duration_since(t.arrival).as_secs_f64());
    if let (Some(first), true) = (t.first, count > 1) {
        m.tpot.observe(now.duration_since(first).as_secs_f64() / (count - 1) as f64);
    }
    m.finished(reason);
}
