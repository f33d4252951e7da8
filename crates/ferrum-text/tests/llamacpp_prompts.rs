//! Token ids of the default model's GGUF tokenizer must equal llama.cpp's
//! `prompt_tokens` for the eight reference prompts (raw prompts, special
//! tokens parsed, no BOS).

mod common;

use serde_json::Value;

#[test]
fn prompt_tokens_match_llama_cpp() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let text = std::fs::read_to_string(common::fixture("llamacpp_prompt_tokens.json")).unwrap();
    let refs: Value = serde_json::from_str(&text).unwrap();
    let prompts = refs["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 8);
    let mut failures = Vec::new();
    for p in prompts {
        let id = p["id"].as_str().unwrap();
        let prompt = p["prompt"].as_str().unwrap();
        let want: Vec<u32> = p["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(prompt, true, false).unwrap();
        if got != want {
            failures.push(format!("{id}: {prompt:?}\n  want {want:?}\n  got  {got:?}"));
        }
        // add_special adds nothing for this model (add_bos_token = false).
        assert_eq!(tok.encode(prompt, true, true).unwrap(), got, "{id}");
        // Round trip, special tokens kept.
        assert_eq!(tok.decode(&got, false).unwrap(), prompt, "{id}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn default_model_special_tokens() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    assert_eq!(tok.vocab_size(), 151936);
    assert_eq!(tok.bos_id(), Some(151643));
    assert!(!tok.add_bos());
    // eos (<|im_end|>) first, then <|endoftext|> and the FIM pad / repo /
    // file separators, as llama.cpp's end-of-generation set has them.
    assert_eq!(tok.eos_ids(), [151645, 151643, 151662, 151663, 151664]);
    assert!(tok.is_special(151644) && tok.is_special(151643));
    // <tool_call> is user-defined: added, but not special.
    assert_eq!(tok.token_to_id("<tool_call>"), Some(151657));
    assert!(!tok.is_special(151657));
    assert!(!tok.is_special(0));

    // parse_special=false: control tokens are plain text.
    let plain = tok.encode("<|im_start|>user", false, false).unwrap();
    assert!(!plain.contains(&151644), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<|im_start|>user");
    let parsed = tok.encode("<|im_start|>user", true, false).unwrap();
    assert_eq!(parsed[0], 151644);
    assert_eq!(tok.decode(&parsed, true).unwrap(), "user");
    // user-defined tokens are split out either way.
    for parse in [false, true] {
        let ids = tok.encode("a<tool_call>b", parse, false).unwrap();
        assert!(ids.contains(&151657), "{ids:?}");
    }

    // token_bytes: byte-level decoding.
    assert_eq!(tok.token_bytes(262).unwrap(), b"   ");
    assert_eq!(tok.token_bytes(151644).unwrap(), b"<|im_start|>");
    assert_eq!(tok.token_bytes(151936), None);
    assert!(tok.decode(&[151936], false).is_err());
}
