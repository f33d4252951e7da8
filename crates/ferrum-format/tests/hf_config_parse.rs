//! config.json / generation_config.json parsing on hand-written copies of the
//! public configs of Llama-3.1-8B-Instruct, Qwen2.5-0.5B-Instruct, Qwen3-0.6B
//! and Qwen3-30B-A3B, plus malformed and transformers-5 variants.

use ferrum_format::hf_config::{GenerationConfig, HfConfig, RopeScalingKind};

const LLAMA31_8B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
}"#;

const QWEN25_05B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

const QWEN3_06B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

const QWEN3_30B_A3B: &str = r#"{
  "architectures": ["Qwen3MoeForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "decoder_sparse_step": 1,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 6144,
  "max_position_embeddings": 40960,
  "max_window_layers": 48,
  "mlp_only_layers": [],
  "model_type": "qwen3_moe",
  "moe_intermediate_size": 768,
  "norm_topk_prob": true,
  "num_attention_heads": 32,
  "num_experts": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 48,
  "num_key_value_heads": 4,
  "output_router_logits": false,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.001,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

fn parse(s: &str) -> HfConfig {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(s: &str) -> String {
    s.parse::<HfConfig>().unwrap_err().to_string()
}

#[test]
fn llama31_8b() {
    let c = parse(LLAMA31_8B);
    assert_eq!(c.architectures, ["LlamaForCausalLM"]);
    assert_eq!(c.model_type, "llama");
    assert_eq!((c.hidden_size, c.intermediate_size), (4096, 14336));
    assert_eq!(
        (c.num_hidden_layers, c.num_attention_heads, c.num_kv_heads()),
        (32, 32, 8)
    );
    assert_eq!(c.head_dim(), 128);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.vocab_size, 128256);
    assert_eq!(c.max_position_embeddings, 131072);
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.is_moe());
    assert_eq!(c.bos_token_id, Some(128000));
    assert_eq!(c.eos_token_id, [128001, 128008, 128009]);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    let rs = c.rope_scaling.as_ref().unwrap();
    assert_eq!(
        rs.kind().unwrap(),
        RopeScalingKind::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        }
    );
}

#[test]
fn qwen25_05b() {
    let c = parse(QWEN25_05B);
    assert_eq!(c.model_type, "qwen2");
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (896, 4864, 24)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_kv_heads(), c.head_dim()),
        (14, 2, 64)
    );
    assert_eq!(c.head_dim, None);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 1e6);
    assert!(c.rope_scaling.is_none());
    assert!(c.tie_word_embeddings);
    // No key in Qwen2 configs: biases are implied by the architecture.
    assert!(!c.attention_bias);
    assert_eq!(
        (c.sliding_window, c.use_sliding_window, c.max_window_layers),
        (Some(131072), false, Some(21))
    );
    assert_eq!(c.eos_token_id, [151645]);
    assert_eq!(c.hidden_act, "silu");
}

#[test]
fn qwen3_06b() {
    let c = parse(QWEN3_06B);
    assert_eq!(c.model_type, "qwen3");
    // head_dim is explicit and differs from hidden / heads (1024 / 16 = 64).
    assert_eq!((c.head_dim, c.head_dim()), (Some(128), 128));
    assert_eq!((c.num_attention_heads, c.num_kv_heads()), (16, 8));
    assert_eq!(c.rope_theta, 1e6);
    assert!(c.rope_scaling.is_none());
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.max_position_embeddings, 40960);
    assert!(c.tie_word_embeddings && !c.is_moe());
}

#[test]
fn qwen3_30b_a3b() {
    let c = parse(QWEN3_30B_A3B);
    assert_eq!(c.architectures, ["Qwen3MoeForCausalLM"]);
    assert_eq!(c.model_type, "qwen3_moe");
    assert_eq!((c.hidden_size, c.num_hidden_layers), (2048, 48));
    assert_eq!(
        (c.num_attention_heads, c.num_kv_heads(), c.head_dim()),
        (32, 4, 128)
    );
    assert_eq!((c.num_experts, c.num_experts_per_tok), (Some(128), Some(8)));
    assert_eq!(c.moe_intermediate_size, Some(768));
    assert!(c.norm_topk_prob);
    assert_eq!(c.decoder_sparse_step, 1);
    assert!(c.mlp_only_layers.is_empty());
    assert!(c.is_moe() && (0..48).all(|l| c.is_moe_layer(l)));
    assert!(!c.tie_word_embeddings);
}

#[test]
fn moe_layer_rule() {
    let s = QWEN3_30B_A3B
        .replace("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2")
        .replace("\"mlp_only_layers\": []", "\"mlp_only_layers\": [3]");
    let c = parse(&s);
    let moe: Vec<usize> = (0..8).filter(|&l| c.is_moe_layer(l)).collect();
    assert_eq!(moe, [1, 5, 7]);
}

#[test]
fn defaults_when_keys_absent() {
    let s = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
        "max_position_embeddings": 256}"#;
    let c = parse(s);
    assert!(c.architectures.is_empty());
    assert_eq!((c.num_kv_heads(), c.head_dim()), (4, 16));
    assert_eq!((c.rope_theta, c.rms_norm_eps), (10000.0, 1e-6));
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.use_sliding_window);
    assert!(c.eos_token_id.is_empty() && c.bos_token_id.is_none());
    assert_eq!(c.decoder_sparse_step, 1);
    assert!(!c.norm_topk_prob);
}

#[test]
fn missing_required_key_is_named() {
    for key in [
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "model_type",
        "intermediate_size",
    ] {
        let s = QWEN25_05B.replace(&format!("\"{key}\""), "\"renamed\"");
        let msg = parse_err(&s);
        assert!(msg.contains(key), "{key}: {msg}");
    }
}

#[test]
fn invalid_values_are_named() {
    let msg =
        parse_err(&QWEN25_05B.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"));
    assert!(
        msg.contains("num_key_value_heads") && msg.contains('3'),
        "{msg}"
    );
    let msg =
        parse_err(&QWEN25_05B.replace("\"num_attention_heads\": 14", "\"num_attention_heads\": 0"));
    assert!(msg.contains("num_attention_heads"), "{msg}");
    let msg = parse_err(&QWEN25_05B.replace("\"hidden_size\": 896", "\"hidden_size\": \"896\""));
    assert!(msg.contains("invalid type"), "{msg}");
    let msg = parse_err(
        &QWEN3_30B_A3B.replace("\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 200"),
    );
    assert!(
        msg.contains("num_experts_per_tok") && msg.contains("200"),
        "{msg}"
    );
    let msg = parse_err("{");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn eos_forms() {
    let c = parse(&QWEN25_05B.replace("\"eos_token_id\": 151645", "\"eos_token_id\": null"));
    assert!(c.eos_token_id.is_empty());
    let c = parse(&QWEN25_05B.replace("\"eos_token_id\": 151645", "\"eos_token_id\": [1, 2]"));
    assert_eq!(c.eos_token_id, [1, 2]);
    assert!(QWEN25_05B
        .replace("\"eos_token_id\": 151645", "\"eos_token_id\": \"x\"")
        .parse::<HfConfig>()
        .is_err());
}

#[test]
fn rope_scaling_variants() {
    let with = |rs: &str| {
        parse(&QWEN25_05B.replace(
            "\"rope_theta\"",
            &format!("\"rope_scaling\": {rs}, \"rope_theta\""),
        ))
    };
    let c = with(r#"{"type": "linear", "factor": 2.0}"#);
    assert_eq!(
        c.rope_scaling.unwrap().kind().unwrap(),
        RopeScalingKind::Linear { factor: 2.0 }
    );
    let c = with(r#"{"type": "dynamic", "rope_type": "dynamic", "factor": 4.0}"#);
    assert_eq!(
        c.rope_scaling.unwrap().kind().unwrap(),
        RopeScalingKind::Dynamic { factor: 4.0 }
    );
    let c = with(
        r#"{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "mscale": 1.0}"#,
    );
    let rs = c.rope_scaling.unwrap();
    assert_eq!(rs.extra.get("mscale"), Some(&serde_json::json!(1.0)));
    assert_eq!(
        rs.kind().unwrap(),
        RopeScalingKind::Yarn {
            factor: 4.0,
            original_max_position_embeddings: Some(32768),
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None
        }
    );
    let c = with(
        r#"{"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
    );
    let msg = c.rope_scaling.unwrap().kind().unwrap_err().to_string();
    assert!(msg.contains("low_freq_factor"), "{msg}");
    let c = with(r#"{"rope_type": "longrope", "factor": 8.0}"#);
    let msg = c.rope_scaling.unwrap().kind().unwrap_err().to_string();
    assert!(msg.contains("longrope") && msg.contains("llama3"), "{msg}");
}

#[test]
fn transformers5_rope_parameters_and_dtype() {
    let s = QWEN3_06B
        .replace("\"rope_scaling\": null,", "")
        .replace(
            "\"rope_theta\": 1000000,",
            r#""rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},"#,
        )
        .replace("\"torch_dtype\"", "\"dtype\"");
    let c = parse(&s);
    assert_eq!(c.rope_theta, 5000.0);
    assert!(c.rope_scaling.is_none() && c.rope_parameters.is_none());
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));

    let s = LLAMA31_8B
        .replace("\"rope_scaling\"", "\"rope_parameters\"")
        .replace(
            "\"rope_type\": \"llama3\"",
            "\"rope_type\": \"llama3\", \"rope_theta\": 500000.0",
        );
    let c = parse(&s.replace("\"rope_theta\": 500000.0,\n", ""));
    assert_eq!(c.rope_theta, 500000.0);
    assert!(
        matches!(c.rope_scaling.unwrap().kind().unwrap(), RopeScalingKind::Llama3 { factor, .. } if factor == 8.0)
    );
}

#[test]
fn from_file_roundtrip_and_io_error() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hfcfg");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.json");
    std::fs::write(&p, QWEN3_06B).unwrap();
    assert_eq!(HfConfig::from_file(&p).unwrap(), parse(QWEN3_06B));
    let msg = HfConfig::from_file(&dir.join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent.json"), "{msg}");
}

#[test]
fn generation_configs() {
    let g: GenerationConfig =
        r#"{"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
        "eos_token_id": [151645, 151643], "repetition_penalty": 1.1, "temperature": 0.7,
        "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}"#
            .parse()
            .unwrap();
    assert_eq!(g.eos_token_id, [151645, 151643]);
    assert_eq!(
        (g.temperature, g.top_p, g.top_k),
        (Some(0.7), Some(0.8), Some(20))
    );
    assert_eq!(
        (g.repetition_penalty, g.do_sample, g.min_p),
        (Some(1.1), Some(true), None)
    );
    assert_eq!(g.bos_token_id, Some(151643));

    let g: GenerationConfig = r#"{"eos_token_id": 128009, "min_p": 0.05}"#.parse().unwrap();
    assert_eq!(
        (g.eos_token_id, g.min_p, g.temperature),
        (vec![128009], Some(0.05), None)
    );
    let g: GenerationConfig = "{}".parse().unwrap();
    assert_eq!(g, GenerationConfig::default());
    let msg = r#"{"top_k": -1}"#.parse::<GenerationConfig>().unwrap_err().to_string();
    assert!(msg.contains("generation_config.json"), "{msg}");
}
