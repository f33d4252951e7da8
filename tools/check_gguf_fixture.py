#!/usr/bin/env python3
"""Numpy-only forward pass over the fixture GGUF files, checked against the
transformers logits in reference.json.

This pins down the GGUF conventions Ferrum's loader assumes (see
tests/fixtures/models/README.md): tensor names, dims order (ne0 = the
contiguous input dimension), llama's interleaved rope on permuted q/k rows
with rope_freqs divisors, NEOX rope for qwen2/qwen3/qwen3moe, expert tensors
[n_expert, rows, cols] in numpy order.

Run:  python3 tools/check_gguf_fixture.py [tests/fixtures/models/<family> ...]
Needs only numpy, gguf and safetensors (installed on demand); no torch.
Exit status 0 when every F32 file matches transformers to 1e-4 (typically
~2e-6) and every F16/Q8_0 file matches its reference-<type>.json likewise.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

F32_TOL = 1e-4


def ensure_deps() -> None:
    missing = []
    for mod, pkg in (("numpy", "numpy"), ("gguf", "gguf"), ("safetensors", "safetensors")):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


ensure_deps()
import gguf  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def read_gguf(path: Path):
    """Return (metadata dict, {name: float64 array in numpy order})."""
    reader = gguf.GGUFReader(str(path))
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("tokenizer.ggml.tokens",
                                                "tokenizer.ggml.merges",
                                                "tokenizer.ggml.token_type"):
            continue
        meta[name] = field.contents()
    tensors = {}
    for t in reader.tensors:
        # GGUF lists dims fastest-first (ne0, ne1, ...); numpy order is reversed.
        shape = tuple(int(x) for x in reversed(t.shape))
        vals = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        tensors[t.name] = vals.astype(np.float64)
    return meta, tensors


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, positions, inv_freq, interleaved: bool):
    """x [T, heads, head_dim].  interleaved (llama GGUF): pairs (2i, 2i+1);
    otherwise NEOX: pairs (i, i + head_dim/2)."""
    ang = positions[:, None] * inv_freq[None, :]          # [T, head_dim/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    half = x.shape[-1] // 2
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., :half], x[..., half:]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if interleaved:
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., :half], out[..., half:] = ra, rb
    return out


class Model:
    def __init__(self, meta: dict, t: dict):
        self.t = t
        self.arch = arch = meta["general.architecture"]
        g = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
        self.n_embd = g("embedding_length")
        self.n_layer = g("block_count")
        self.n_head = g("attention.head_count")
        self.n_kv = g("attention.head_count_kv")
        self.head_dim = g("attention.key_length", self.n_embd // self.n_head)
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.n_expert = g("expert_count", 0)
        self.n_used = g("expert_used_count", 0)
        n_rot = g("rope.dimension_count", self.head_dim)
        base = g("rope.freq_base")
        self.inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
        if "rope_freqs.weight" in t:
            self.inv_freq = self.inv_freq / t["rope_freqs.weight"]
        self.interleaved = arch == "llama"
        self.router_margin = float("inf")

    def moe(self, x, p):
        t = self.t
        logits = x @ t[p + "ffn_gate_inp.weight"].T                 # [T, n_expert]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out = np.zeros_like(x)
        for i in range(x.shape[0]):
            order = np.argsort(-probs[i], kind="stable")
            top = order[: self.n_used]
            srt = probs[i][order]
            self.router_margin = min(self.router_margin, srt[self.n_used - 1] - srt[self.n_used])
            w = probs[i][top] / probs[i][top].sum()                 # norm_topk_prob
            for e, we in zip(top, w):
                gate = t[p + "ffn_gate_exps.weight"][e] @ x[i]      # [n_ff_exp]
                up = t[p + "ffn_up_exps.weight"][e] @ x[i]
                h = gate / (1.0 + np.exp(-gate)) * up
                out[i] += we * (t[p + "ffn_down_exps.weight"][e] @ h)
        return out

    def forward(self, ids: list[int]):
        """Full causal forward over ids; returns logits [T, vocab]."""
        t, T, hd = self.t, len(ids), self.head_dim
        pos = np.arange(T, dtype=np.float64)
        x = t["token_embd.weight"][ids]                             # [T, n_embd]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        group = self.n_head // self.n_kv
        for n in range(self.n_layer):
            p = f"blk.{n}."
            h = rms_norm(x, t[p + "attn_norm.weight"], self.eps)
            qkv = []
            for name, heads in (("attn_q", self.n_head), ("attn_k", self.n_kv), ("attn_v", self.n_kv)):
                y = h @ t[p + name + ".weight"].T
                if p + name + ".bias" in t:
                    y = y + t[p + name + ".bias"]
                qkv.append(y.reshape(T, heads, hd))
            q, k, v = qkv
            if p + "attn_q_norm.weight" in t:
                q = rms_norm(q, t[p + "attn_q_norm.weight"], self.eps)
                k = rms_norm(k, t[p + "attn_k_norm.weight"], self.eps)
            q = rope(q, pos, self.inv_freq, self.interleaved)
            k = rope(k, pos, self.inv_freq, self.interleaved)
            att = np.empty((T, self.n_head, hd))
            for hh in range(self.n_head):
                kv = hh // group                                    # GQA: consecutive heads share
                s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
            x = x + att.reshape(T, -1) @ t[p + "attn_output.weight"].T
            h = rms_norm(x, t[p + "ffn_norm.weight"], self.eps)
            if self.n_expert:
                x = x + self.moe(h, p)
            else:
                gate = h @ t[p + "ffn_gate.weight"].T
                up = h @ t[p + "ffn_up.weight"].T
                x = x + (gate / (1.0 + np.exp(-gate)) * up) @ t[p + "ffn_down.weight"].T
        x = rms_norm(x, t["output_norm.weight"], self.eps)
        out_w = t.get("output.weight", t["token_embd.weight"])     # tied when absent
        return x @ out_w.T


def check_unpermute(fam_dir: Path, meta: dict, t: dict) -> None:
    """llama only: undoing the row permutation gives back HF q_proj/k_proj."""
    st = load_file(str(fam_dir / "hf" / "model.safetensors"))
    n_head = meta["llama.attention.head_count"]
    n_kv = meta["llama.attention.head_count_kv"]
    for n in range(meta["llama.block_count"]):
        for g, hf, heads in (("attn_q", "q_proj", n_head), ("attn_k", "k_proj", n_kv)):
            w = t[f"blk.{n}.{g}.weight"]
            rows = w.shape[0]
            # GGUF row (head, j, parity) -> HF row (head, parity, j)
            back = w.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
            ref = st[f"model.layers.{n}.self_attn.{hf}.weight"]
            assert np.array_equal(back.astype(np.float32), ref), f"un-permute blk.{n}.{g}"


def numpy_reference(model: Model, prompt: list[int], n_greedy: int) -> dict:
    """Reference numbers for a (dequantised) GGUF file in reference.json's
    schema: prefill rows, then this model's own greedy chain."""
    prefill = model.forward(prompt)
    greedy = [int(prefill[-1].argmax())]
    while len(greedy) < n_greedy:
        greedy.append(int(model.forward(prompt + greedy)[-1].argmax()))
    decode = model.forward(prompt + greedy[:-1])[len(prompt) - 1:]
    assert [int(i) for i in decode.argmax(-1)] == greedy
    margins = [float(np.sort(r)[-1] - np.sort(r)[-2]) for r in decode]
    return {"prompt": list(prompt), "prefill_logits": prefill.astype(np.float32),
            "greedy": greedy, "decode_logits": decode.astype(np.float32),
            "min_greedy_margin": min(margins)}


def compare(model: Model, ref: dict) -> tuple[float, float, bool]:
    """(max |logit diff|, min cosine, greedy equal) of model against ref."""
    worst, cos_min, greedy_ok = 0.0, 1.0, True
    for r in ref["results"]:
        prompt, greedy = r["prompt"], r["greedy"]
        pre = model.forward(prompt)
        full = model.forward(prompt + greedy[:-1])[len(prompt) - 1:]
        for got, want in ((pre, np.array(r["prefill_logits"])),
                          (full, np.array(r["decode_logits"]))):
            worst = max(worst, float(np.abs(got - want).max()))
            cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
            cos_min = min(cos_min, float(cos.min()))
        greedy_ok &= [int(i) for i in full.argmax(-1)] == greedy
    return worst, cos_min, greedy_ok


def check_family(fam_dir: Path) -> bool:
    """F32 GGUF against transformers (reference.json); F16/Q8_0 against their
    own numpy references (reference-<type>.json), plus an informative
    comparison with transformers."""
    hf_ref = json.loads((fam_dir / "reference.json").read_text())
    ok = True
    for ftype in ("f32", "f16", "q8_0"):
        meta, t = read_gguf(fam_dir / f"model-{ftype}.gguf")
        if ftype == "f32" and meta["general.architecture"] == "llama":
            check_unpermute(fam_dir, meta, t)
        model = Model(meta, t)
        worst, cos_min, greedy_ok = compare(model, hf_ref)
        line = (f"{fam_dir.name:>9} {ftype:>5}: vs transformers max|dlogit| {worst:.3g}, "
                f"min cosine {cos_min:.6f}, greedy {'same' if greedy_ok else 'differs'}")
        if ftype == "f32":
            ok &= worst <= F32_TOL and greedy_ok
        else:
            own = json.loads((fam_dir / f"reference-{ftype}.json").read_text())
            w2, _, g2 = compare(model, own)
            line += f"; vs reference-{ftype}.json {w2:.3g} greedy {'same' if g2 else 'DIFFERS'}"
            ok &= w2 <= F32_TOL and g2
        if model.n_expert:
            line += f"; router top-k margin {model.router_margin:.3g}"
        print(line)
    return ok


def main() -> int:
    root = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
    dirs = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in root.glob("*/reference.json"))
    results = [check_family(d) for d in dirs]
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
