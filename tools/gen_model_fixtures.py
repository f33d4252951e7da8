#!/usr/bin/env python3
"""Generate tiny random reference checkpoints for Ferrum's model tests.

For each family (llama, qwen2, qwen3, qwen3moe) this writes, under
tests/fixtures/models/<family>/:
  hf/config.json, hf/generation_config.json, hf/model.safetensors (F32),
  hf/tokenizer.json, hf/tokenizer_config.json      -- Hugging Face layout
  model-f32.gguf, model-f16.gguf, model-q8_0.gguf  -- llama.cpp names/metadata
  reference.json                                   -- transformers' logits

Run:  python3 tools/gen_model_fixtures.py [--out tests/fixtures/models]
Needs torch + transformers (installed on demand); CI never runs this, the
output is committed.  tools/check_gguf_fixture.py re-checks the GGUF files
with a numpy-only forward pass.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements-fixtures.txt")
VOCAB = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS_ID, EOS_ID, PAD_ID = 0, 2, 0
# 16 symbols whose ordered pairs give the 253 merges (3 specials + 256 bytes
# + 253 merges = 512 tokens).  "\u0120" is the byte-level form of a space.
MERGE_SYMBOLS = "\u0120etaoinshrdlcumw"
PROMPT_LENGTHS = (5, 13)
N_GREEDY = 8
MATRIX_STD = 0.1
# Seeds were picked so that greedy top-1/top-2 logit gaps and (MoE) the gap
# between the k-th and (k+1)-th router probabilities stay clear of float noise.
MIN_GREEDY_MARGIN = 0.01
MIN_ROUTER_MARGIN = 1e-3


def ensure_deps() -> None:
    """Install what this script needs when it is missing (pip, PyPI)."""
    needed = ["numpy", "torch", "transformers", "gguf", "safetensors", "tokenizers"]
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        print(f"installing missing packages: {missing}", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet"]
        cmd += ["-r", str(REQUIREMENTS)] if REQUIREMENTS.is_file() else missing
        subprocess.check_call(cmd)


ensure_deps()
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402


# Per-family hyper-parameters.  head_dim is explicit everywhere; qwen3 and
# qwen3moe use head_dim != hidden / heads; qwen2 uses 6 query heads (not a
# power of two) with 2 kv heads.
FAMILIES = {
    "llama": dict(
        hf_class="LlamaForCausalLM", config_class="LlamaConfig", gguf_arch="llama",
        hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=False, attention_bias=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        seed=1008,
    ),
    "qwen2": dict(
        hf_class="Qwen2ForCausalLM", config_class="Qwen2Config", gguf_arch="qwen2",
        hidden_size=96, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=True, attention_bias=True, rope_scaling=None,
        # Like Qwen2.5's hub config: no head_dim key (hidden / heads applies).
        hf_config_drop=["head_dim"],
        seed=1002,
    ),
    "qwen3": dict(
        hf_class="Qwen3ForCausalLM", config_class="Qwen3Config", gguf_arch="qwen3",
        hidden_size=64, intermediate_size=160, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        tie_word_embeddings=False, attention_bias=False, rope_scaling=None,
        seed=1001,
    ),
    "qwen3moe": dict(
        hf_class="Qwen3MoeForCausalLM", config_class="Qwen3MoeConfig", gguf_arch="qwen3moe",
        hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        tie_word_embeddings=False, attention_bias=False, rope_scaling=None,
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        seed=1019,
    ),
}
COMMON = dict(vocab_size=VOCAB, rms_norm_eps=1e-6, rope_theta=10000.0,
              max_position_embeddings=256)


# ----------------------------------------------------------------- vocabulary
def byte_symbols() -> list[str]:
    """Byte-level BPE alphabet: printable bytes stand for themselves, the
    others are shifted to code points 256.. in byte order."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, shifted = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + shifted))
            shifted += 1
    return out


def build_vocab() -> tuple[list[str], list[int], list[str]]:
    """Return (tokens, token_types, merges) for the 512-token vocabulary:
    ids 0..2 control tokens, 3..258 the 256 byte symbols (id = 3 + byte),
    259..511 two-symbol merges."""
    tokens = list(SPECIAL_TOKENS) + byte_symbols()
    pairs = [(a, b) for a in MERGE_SYMBOLS for b in MERGE_SYMBOLS]
    pairs = pairs[: VOCAB - len(tokens)]
    merges = [f"{a} {b}" for a, b in pairs]
    tokens += [a + b for a, b in pairs]
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB
    types = [3] * len(SPECIAL_TOKENS) + [1] * (VOCAB - len(SPECIAL_TOKENS))
    return tokens, types, merges


def write_hf_tokenizer(hf_dir: Path) -> None:
    tokens, _, merges = build_vocab()
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, t
    tok.save(str(hf_dir / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL_TOKENS[BOS_ID],
           "eos_token": SPECIAL_TOKENS[EOS_ID], "pad_token": SPECIAL_TOKENS[PAD_ID],
           "add_bos_token": False, "model_max_length": COMMON["max_position_embeddings"]}
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# ------------------------------------------------------------------- model
def make_config(spec: dict):
    cls = getattr(transformers, spec["config_class"])
    kw = dict(COMMON)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "tie_word_embeddings", "attention_bias",
                "num_experts", "num_experts_per_tok", "moe_intermediate_size",
                "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"):
        if key in spec:
            kw[key] = spec[key]
    if spec["rope_scaling"] is not None:
        kw["rope_scaling"] = dict(spec["rope_scaling"])
    kw.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
              use_sliding_window=False, attn_implementation="eager")
    if spec["config_class"] == "LlamaConfig":
        kw.pop("use_sliding_window")
    return cls(**kw)


def init_weights(model, seed: int) -> None:
    """Gaussian matrices (std MATRIX_STD), RMSNorm weights 1 + 0.1 N(0,1),
    biases 0.1 N(0,1): every tensor is visibly non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(MATRIX_STD * noise)


def build_model(spec: dict):
    torch.manual_seed(spec["seed"])
    config = make_config(spec)
    model = getattr(transformers, spec["hf_class"])(config)
    init_weights(model, spec["seed"])
    if spec["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.float().eval()


def save_hf(model, spec: dict, hf_dir: Path) -> None:
    """save_pretrained, then add the transformers-4 style aliases most hub
    checkpoints carry (rope_theta, rope_scaling, num_experts) next to the
    transformers-5 keys (rope_parameters, num_local_experts)."""
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    cfg_path = hf_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = COMMON["rope_theta"]
    cfg["rope_scaling"] = dict(spec["rope_scaling"]) if spec["rope_scaling"] else None
    if "num_experts" in spec:
        cfg["num_experts"] = spec["num_experts"]
    for key in spec.get("hf_config_drop", []):
        assert key != "head_dim" or spec["head_dim"] * spec["num_attention_heads"] == spec["hidden_size"]
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_hf_tokenizer(hf_dir)


# --------------------------------------------------------------- reference
def run_reference(model, prompt: list[int]) -> dict:
    """Prefill one prompt (batch of one), then N_GREEDY greedy steps through
    the KV cache.  decode_logits[0] is the last prefill row."""
    with torch.no_grad():
        ids = torch.tensor([prompt], dtype=torch.long)
        out = model(input_ids=ids, use_cache=True)
        prefill = out.logits[0].float().numpy()
        past = out.past_key_values
        rows = [prefill[-1]]
        greedy = [int(rows[0].argmax())]
        for _ in range(N_GREEDY - 1):
            step = torch.tensor([[greedy[-1]]], dtype=torch.long)
            out = model(input_ids=step, past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1].float().numpy())
            greedy.append(int(rows[-1].argmax()))
        # Sanity: the cached decode equals a full recompute of the sequence.
        full = model(input_ids=torch.tensor([prompt + greedy[:-1]]), use_cache=False)
        full_rows = full.logits[0, len(prompt) - 1:].float().numpy()
    decode = np.stack(rows)
    err = float(np.abs(full_rows - decode).max())
    assert err < 1e-4, f"cached decode differs from recompute by {err}"
    margins = [float(np.sort(r)[-1] - np.sort(r)[-2]) for r in decode]
    return {"prompt": list(prompt), "prefill_logits": prefill, "greedy": greedy,
            "decode_logits": decode, "min_greedy_margin": min(margins),
            "decode_vs_recompute_max_abs": err}


def check_padded_batch(model, prompts: list[list[int]], results: list[dict]) -> float:
    """Left-pad all prompts to one batch; logits at real positions must equal
    the batch-of-one numbers."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                       use_cache=False).logits.float().numpy()
    worst = 0.0
    for b, (p, r) in enumerate(zip(prompts, results)):
        diff = np.abs(logits[b, width - len(p):] - r["prefill_logits"]).max()
        worst = max(worst, float(diff))
    assert worst < 1e-4, f"padded batch differs from single runs by {worst}"
    return worst


def llama3_rope_divisors(head_dim: int, theta: float, rs: dict) -> list[float]:
    """Per-frequency divisors (llama.cpp 'rope_freqs'): the llama3 scaled
    inverse frequency is base_inv_freq[i] / divisor[i]."""
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    lo_wavelen, hi_wavelen = old_ctx / lo, old_ctx / hi
    out = []
    for i in range(0, head_dim, 2):
        inv = 1.0 / theta ** (i / head_dim)
        wavelen = 2.0 * math.pi / inv
        if wavelen < hi_wavelen:
            out.append(1.0)
        elif wavelen > lo_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1.0 - smooth) / factor + smooth))
    return out


# -------------------------------------------------------------------- GGUF
def permute_for_llama_rope(w, n_head: int):
    """HF rows of one head are [first half | second half] (rotate_half); the
    llama GGUF stores them interleaved so pairs (2j, 2j+1) rotate together:
    new row 2j = old row j, new row 2j+1 = old row j + head_dim/2."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def gguf_tensor_list(spec: dict, st: dict) -> list[tuple[str, object, str]]:
    """(gguf name, float32 numpy array, role) from the HF safetensors dict.
    role: 'matrix' (quantised in F16/Q8_0 files) or 'f32' (always F32)."""
    n_head, n_kv = spec["num_attention_heads"], spec["num_key_value_heads"]
    is_llama = spec["gguf_arch"] == "llama"
    out = [("token_embd.weight", st["model.embed_tokens.weight"], "matrix")]
    if spec["rope_scaling"] is not None:
        div = llama3_rope_divisors(spec["head_dim"], COMMON["rope_theta"], spec["rope_scaling"])
        out.append(("rope_freqs.weight", np.asarray(div, dtype=np.float32), "f32"))
    for n in range(spec["num_hidden_layers"]):
        hf, blk = f"model.layers.{n}.", f"blk.{n}."
        att = hf + "self_attn."
        out.append((blk + "attn_norm.weight", st[hf + "input_layernorm.weight"], "f32"))
        for proj, dst, heads in (("q_proj", "attn_q", n_head), ("k_proj", "attn_k", n_kv),
                                 ("v_proj", "attn_v", None)):
            w = st[att + proj + ".weight"]
            if is_llama and heads is not None:
                w = permute_for_llama_rope(w, heads)
            out.append((blk + dst + ".weight", w, "matrix"))
            if spec["attention_bias"]:
                b = st[att + proj + ".bias"]
                if is_llama and heads is not None:
                    b = permute_for_llama_rope(b, heads)
                out.append((blk + dst + ".bias", b, "f32"))
        if att + "q_norm.weight" in st:
            out.append((blk + "attn_q_norm.weight", st[att + "q_norm.weight"], "f32"))
            out.append((blk + "attn_k_norm.weight", st[att + "k_norm.weight"], "f32"))
        out.append((blk + "attn_output.weight", st[att + "o_proj.weight"], "matrix"))
        out.append((blk + "ffn_norm.weight", st[hf + "post_attention_layernorm.weight"], "f32"))
        if "num_experts" in spec:
            # Router stays F32 (llama.cpp's converter keeps ffn_gate_inp F32).
            out.append((blk + "ffn_gate_inp.weight", st[hf + "mlp.gate.weight"], "f32"))
            for src, dst in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"),
                             ("down_proj", "ffn_down_exps")):
                stack = np.stack([st[f"{hf}mlp.experts.{e}.{src}.weight"]
                                  for e in range(spec["num_experts"])])
                out.append((blk + dst + ".weight", stack, "matrix"))
        else:
            for src, dst in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"),
                             ("down_proj", "ffn_down")):
                out.append((blk + dst + ".weight", st[f"{hf}mlp.{src}.weight"], "matrix"))
    out.append(("output_norm.weight", st["model.norm.weight"], "f32"))
    if not spec["tie_word_embeddings"]:
        out.append(("output.weight", st["lm_head.weight"], "matrix"))
    return [(n, np.ascontiguousarray(a, dtype=np.float32), r) for n, a, r in out]


def write_gguf(spec: dict, family: str, st: dict, path: Path, ftype: str) -> None:
    arch = spec["gguf_arch"]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ftype]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"ferrum-tiny-{family}")
    w.add_file_type(int(file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(VOCAB)
    w.add_context_length(COMMON["max_position_embeddings"])
    w.add_embedding_length(spec["hidden_size"])
    w.add_block_count(spec["num_hidden_layers"])
    w.add_feed_forward_length(spec["intermediate_size"])
    w.add_head_count(spec["num_attention_heads"])
    w.add_head_count_kv(spec["num_key_value_heads"])
    w.add_layer_norm_rms_eps(COMMON["rms_norm_eps"])
    w.add_rope_freq_base(COMMON["rope_theta"])
    if arch == "llama":
        w.add_rope_dimension_count(spec["head_dim"])
    if arch in ("qwen3", "qwen3moe"):
        w.add_key_length(spec["head_dim"])
        w.add_value_length(spec["head_dim"])
    if "num_experts" in spec:
        w.add_expert_count(spec["num_experts"])
        w.add_expert_used_count(spec["num_experts_per_tok"])
        w.add_expert_feed_forward_length(spec["moe_intermediate_size"])
    tokens, types, merges = build_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(False)
    for name, arr, role in gguf_tensor_list(spec, st):
        if role == "f32" or ftype == "f32":
            w.add_tensor(name, arr)
        elif ftype == "f16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            assert arr.shape[-1] % 32 == 0, f"{name}: row {arr.shape[-1]} not a multiple of 32"
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def verify_gguf(spec: dict, st: dict, path: Path, ftype: str) -> None:
    """Re-read with GGUFReader: names, GGUF dims (ne0 first), types, values."""
    reader = gguf.GGUFReader(str(path))
    got = {t.name: t for t in reader.tensors}
    want = gguf_tensor_list(spec, st)
    assert set(got) == {n for n, _, _ in want}, sorted(set(got) ^ {n for n, _, _ in want})
    tol = {"f32": 0.0, "f16": 1e-3, "q8_0": 0.05 * MATRIX_STD * 4}[ftype]
    for name, arr, role in want:
        t = got[name]
        assert tuple(int(x) for x in t.shape) == tuple(reversed(arr.shape)), name
        qt = t.tensor_type
        expect_f32 = role == "f32" or ftype == "f32"
        want_type = (gguf.GGMLQuantizationType.F32 if expect_f32 else
                     {"f16": gguf.GGMLQuantizationType.F16,
                      "q8_0": gguf.GGMLQuantizationType.Q8_0}[ftype])
        assert qt == want_type, (name, qt)
        vals = gguf.quants.dequantize(t.data, qt).reshape(arr.shape)
        err = float(np.abs(vals.astype(np.float64) - arr).max())
        assert err <= (0.0 if expect_f32 else tol), (name, err)


# ------------------------------------------------------------------ output
def fmt_value(v) -> str:
    if isinstance(v, np.ndarray):
        if v.ndim == 1:
            assert np.isfinite(v).all()
            return "[" + ",".join(str(np.float32(x)) for x in v) + "]"
        return "[\n" + ",\n".join(fmt_value(r) for r in v) + "\n]"
    return json.dumps(v)


def write_reference(path: Path, head: dict, results: list[dict]) -> None:
    """JSON with one logits row per line; floats are the shortest decimal
    text that round-trips the float32 value."""
    parts = ["{"]
    for k, v in head.items():
        parts.append(f"{json.dumps(k)}: {json.dumps(v)},")
    parts.append('"results": [')
    for i, r in enumerate(results):
        body = [f'"{k}": {fmt_value(r[k])}' for k in
                ("prompt", "greedy", "min_greedy_margin", "decode_vs_recompute_max_abs",
                 "prefill_logits", "decode_logits") if k in r]
        parts.append("{" + ",\n".join(body) + "}" + ("," if i + 1 < len(results) else ""))
    parts.append("]}")
    path.write_text("\n".join(parts) + "\n")
    json.loads(path.read_text())  # must parse


def reference_config(spec: dict, model) -> dict:
    cfg = {k: spec[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "num_key_value_heads", "head_dim",
                                "tie_word_embeddings", "attention_bias")}
    cfg.update(COMMON)
    cfg["rope_scaling"] = spec["rope_scaling"]
    for k in ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
              "decoder_sparse_step", "mlp_only_layers"):
        if k in spec:
            cfg[k] = spec[k]
    if spec["rope_scaling"] is not None:
        cfg["rope_freqs"] = llama3_rope_divisors(spec["head_dim"], COMMON["rope_theta"],
                                                 spec["rope_scaling"])
        inv = model.model.rotary_emb.inv_freq.double().numpy()
        base = [1.0 / COMMON["rope_theta"] ** (i / spec["head_dim"])
                for i in range(0, spec["head_dim"], 2)]
        for b, d, got in zip(base, cfg["rope_freqs"], inv):
            assert abs(b / d - got) <= 1e-6 * b, "rope_freqs disagree with transformers"
    cfg.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return cfg


def generate_family(family: str, out_root: Path) -> None:
    spec = FAMILIES[family]
    fam_dir = out_root / family
    hf_dir = fam_dir / "hf"
    model = build_model(spec)
    save_hf(model, spec, hf_dir)
    st = load_file(str(hf_dir / "model.safetensors"))

    # Reload from disk (patched config included) and insist on identical logits.
    cls = getattr(transformers, spec["hf_class"])
    reloaded = cls.from_pretrained(str(hf_dir), attn_implementation="eager",
                                   dtype=torch.float32).eval()

    rng = np.random.default_rng(spec["seed"])
    prompts = [[int(x) for x in rng.integers(3, VOCAB, size=n)] for n in PROMPT_LENGTHS]
    router_margins: list[float] = []
    hooks = [layer.mlp.gate.register_forward_hook(router_margin_hook(spec, router_margins))
             for layer in model.model.layers] if "num_experts" in spec else []
    results = [run_reference(model, p) for p in prompts]
    for h in hooks:
        h.remove()
    greedy_margin = min(r["min_greedy_margin"] for r in results)
    assert greedy_margin >= MIN_GREEDY_MARGIN, f"{family}: greedy margin {greedy_margin}; change seed"
    router_margin = min(router_margins, default=None)
    assert router_margin is None or router_margin >= MIN_ROUTER_MARGIN, \
        f"{family}: router margin {router_margin}; change seed"
    again = [run_reference(reloaded, p) for p in prompts]
    for a, b in zip(results, again):
        assert np.array_equal(a["prefill_logits"], b["prefill_logits"]), "reload changed logits"
        assert a["greedy"] == b["greedy"]
    pad_err = check_padded_batch(model, prompts, results)

    for ftype in ("f32", "f16", "q8_0"):
        path = fam_dir / f"model-{ftype}.gguf"
        write_gguf(spec, family, st, path, ftype)
        verify_gguf(spec, st, path, ftype)

    head = {
        "family": family,
        "architecture": spec["hf_class"],
        "gguf_architecture": spec["gguf_arch"],
        "generator": "tools/gen_model_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "config": reference_config(spec, model),
        "prompts": prompts,
        "padded_batch_max_abs": pad_err,
    }
    if router_margin is not None:
        head["min_router_margin"] = router_margin
    write_reference(fam_dir / "reference.json", head, results)
    print(f"{family}: greedy {[r['greedy'] for r in results]}, min margin {greedy_margin:.4g}, "
          f"router margin {router_margin}, padded-batch diff {pad_err:.3g}", flush=True)
    write_quantized_references(fam_dir, family, spec, prompts)


def router_margin_hook(spec: dict, sink: list[float]):
    """Forward hook on the MoE router: records min over tokens of
    p[k-1] - p[k] (sorted softmax probabilities, k = experts used)."""
    k = spec["num_experts_per_tok"]

    def hook(_module, _inputs, output):
        logits = output[0] if isinstance(output, tuple) else output
        probs = torch.softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values
        sink.append(float((probs[:, k - 1] - probs[:, k]).min()))

    return hook


def write_quantized_references(fam_dir: Path, family: str, spec: dict, prompts) -> None:
    """reference-f16.json / reference-q8_0.json: the same schema as
    reference.json, computed by tools/check_gguf_fixture.py's numpy float64
    forward over the dequantised weights of that GGUF file (its own greedy
    chain), so a loader can be checked tightly on quantised files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import check_gguf_fixture as chk

    for ftype in ("f16", "q8_0"):
        meta, tensors = chk.read_gguf(fam_dir / f"model-{ftype}.gguf")
        model = chk.Model(meta, tensors)
        results = [chk.numpy_reference(model, p, N_GREEDY) for p in prompts]
        head = {"family": family, "architecture": spec["hf_class"],
                "gguf_architecture": spec["gguf_arch"], "gguf_file": f"model-{ftype}.gguf",
                "generator": "tools/gen_model_fixtures.py via tools/check_gguf_fixture.py "
                             "(numpy float64 forward over dequantised GGUF weights)",
                "prompts": prompts}
        if model.n_expert:
            head["min_router_margin"] = model.router_margin
        write_reference(fam_dir / f"reference-{ftype}.json", head, results)
        print(f"{family} {ftype}: greedy {[r['greedy'] for r in results]}", flush=True)


def print_sizes(root: Path) -> None:
    total = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            size = p.stat().st_size
            total += size
            print(f"{size:>10}  {p.relative_to(root)}")
    print(f"{total:>10}  TOTAL ({total / 2**20:.2f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--out", type=Path, default=repo / "tests" / "fixtures" / "models")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    for fam in args.families:
        generate_family(fam, args.out)
    print_sizes(args.out)


if __name__ == "__main__":
    main()
