//! Chat templates rendered by ferrum-text against transformers'
//! `apply_chat_template(tokenize=False)`, byte for byte, on the goldens that
//! tools/gen_chat_goldens.py wrote (Qwen2.5, Qwen3 with thinking on and off,
//! Llama-3.1; system prompts, multi-turn, tools, tool calls, a raised error).

use std::path::PathBuf;

use ferrum_text::{ChatOptions, ChatTemplate};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

fn options(case: &Value) -> ChatOptions {
    let mut opts = ChatOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        tools: case["tools"].as_array().cloned(),
        bos_token: case["bos_token"].as_str().unwrap().to_string(),
        eos_token: case["eos_token"].as_str().unwrap().to_string(),
        ..Default::default()
    };
    for (k, v) in case["kwargs"].as_object().unwrap() {
        if k == "enable_thinking" {
            opts.enable_thinking = v.as_bool();
        } else {
            opts.extra.insert(k.clone(), v.clone());
        }
    }
    opts
}

/// The first differing line, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.split('\n').zip(b.split('\n')).enumerate() {
        if x != y {
            return format!(
                "line {}:\n  ferrum:       {x:?}\n  transformers: {y:?}",
                i + 1
            );
        }
    }
    format!(
        "lengths differ: ferrum {} bytes, transformers {} bytes",
        a.len(),
        b.len()
    )
}

#[test]
fn templates_match_transformers() {
    let goldens: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("goldens.json")).unwrap())
            .unwrap();
    let cases = goldens["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let src = std::fs::read_to_string(
            fixtures()
                .join("templates")
                .join(case["template"].as_str().unwrap()),
        )
        .unwrap();
        let tmpl = ChatTemplate::new(src).unwrap();
        let messages = case["messages"].as_array().unwrap();
        let got = tmpl.render(messages, &options(case));
        match (case.get("expected").and_then(Value::as_str), got) {
            (Some(want), Ok(got)) if got == want => {}
            (Some(want), Ok(got)) => {
                failures.push(format!("{name}: {}", first_difference(&got, want)))
            }
            (Some(_), Err(e)) => failures.push(format!("{name}: render failed: {e}")),
            (None, Ok(got)) => {
                failures.push(format!("{name}: expected an error, rendered {got:?}"))
            }
            (None, Err(e)) => {
                let want = case["error"].as_str().unwrap();
                if !e.to_string().contains(want) {
                    failures.push(format!("{name}: error {e} does not contain {want:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn thinking_switch_changes_the_generation_prompt() {
    let src = std::fs::read_to_string(fixtures().join("templates/qwen3.jinja")).unwrap();
    let tmpl = ChatTemplate::new(src).unwrap();
    let msgs = [serde_json::json!({"role": "user", "content": "hi"})];
    let off = tmpl
        .render(
            &msgs,
            &ChatOptions {
                add_generation_prompt: true,
                enable_thinking: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let on = tmpl
        .render(
            &msgs,
            &ChatOptions {
                add_generation_prompt: true,
                enable_thinking: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        off.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        "{off:?}"
    );
    assert!(on.ends_with("<|im_start|>assistant\n"), "{on:?}");
}

#[test]
fn render_error_names_the_template_line() {
    let src =
        std::fs::read_to_string(fixtures().join("templates/llama3.1-instruct.jinja")).unwrap();
    let tmpl = ChatTemplate::new(src).unwrap();
    let opts = ChatOptions {
        tools: Some(vec![serde_json::json!({"type": "function"})]),
        ..Default::default()
    };
    // Only a system message: no first user message to put the tools in.
    let err = tmpl
        .render(
            &[serde_json::json!({"role": "system", "content": "s"})],
            &opts,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Cannot put tools in the first user message"),
        "{err}"
    );
    assert!(err.contains("line "), "{err}");
}
