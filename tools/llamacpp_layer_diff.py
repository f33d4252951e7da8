#!/usr/bin/env python3
"""Layer-by-layer distance between Ferrum and llama.cpp on one decode step of
the real default model (the reference prompts' teacher-forced tokens).

llama.cpp runs through llama-cpp-python with an eval callback that copies
every f32 intermediate of the traced step; Ferrum's come from the ignored
test `layer_trace_dump` (crates/ferrum-model/tests/real_model.rs), which this
script runs. Printed: relative L2 distance ||ferrum - llama|| / ||llama|| of
the last row of each named tensor, per layer, and of the logits.

Usage: python3 tools/llamacpp_layer_diff.py MODEL.gguf [CASE] [STEP] [--kv f16|f32]
Needs llama-cpp-python (tools/llamacpp_logprob_drift.py says how to get it).
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
# Ferrum's trace names -> llama.cpp's graph names (the last write of each).
PAIRS = [("attn_norm", "attn_norm"), ("q_rope", "Qcur"), ("attn", "kqv_out"), ("ffn_norm", "ffn_norm"),
         ("ffn_out", "ffn_out"), ("residual", "l_out")]


class Tensor(ctypes.Structure):  # struct ggml_tensor (ggml.h), GGML_MAX_DIMS 4, GGML_MAX_SRC 10
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def llama_trace(model, tokens, n_prompt, kv):
    """Every contiguous f32 tensor of the last llama_decode call, flat, by name, and the logits."""
    seen, on = {}, [False]

    @llama_cpp.ggml_backend_sched_eval_callback
    def cb(ptr, ask, _ud):
        if ask or not on[0]:
            return on[0] or not ask
        t = ctypes.cast(ptr, ctypes.POINTER(Tensor)).contents
        ne = list(t.ne)
        if t.type == 0 and t.data and (ne[1] == 1 or t.nb[1] == 4 * ne[0]):
            n = ne[0] * ne[1] * ne[2] * ne[3]
            a = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_float)), shape=(n,))
            seen[t.name.decode()] = a.copy()
        return True

    mparams = llama_cpp.llama_model_default_params()
    m = llama_cpp.llama_model_load_from_file(model.encode(), mparams)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 512, 2, 2
    params.flash_attn_type = 1
    params.type_k = params.type_v = 1 if kv == "f16" else 0
    params.cb_eval = cb
    ctx = llama_cpp.llama_init_from_model(m, params)
    start, n = 0, n_prompt
    while start < len(tokens):
        on[0] = start + n == len(tokens)
        batch = llama_cpp.llama_batch_init(n, 0, 1)
        batch.n_tokens = n
        for i in range(n):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tokens[start + i], start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, int(i == n - 1)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        llama_cpp.llama_batch_free(batch)
        start, n = start + n, 1
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(m))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
    return seen, logits


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    kv = "f16" if "--kv" not in sys.argv or sys.argv[sys.argv.index("--kv") + 1] == "f16" else "f32"
    args = [a for a in args if a not in ("f16", "f32")]
    model, case, step = args[0], int(args[1]) if len(args) > 1 else 0, int(args[2]) if len(args) > 2 else 0
    c = json.loads((ROOT / "tests/fixtures/reference/visible_ref.json").read_text())[case]
    tokens = c["prompt_tokens"] + c["completion_tokens"][:step]
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, FERRUM_DEFAULT_MODEL=model, FERRUM_TRACE_DIR=d, FERRUM_TRACE_CASE=str(case),
                   FERRUM_TRACE_STEP=str(step), FERRUM_TRACE_KV=kv)
        subprocess.run(["cargo", "test", "-q", "-p", "ferrum-model", "--test", "real_model", "layer_trace_dump",
                        "--", "--ignored"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        ours = {p.name: np.fromfile(p, dtype=np.float32) for p in Path(d).iterdir()}
    theirs, logits = llama_trace(model, tokens, len(c["prompt_tokens"]), kv)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    print(f"case {c['id']} step {step}, KV cache {kv}: ||ferrum - llama.cpp|| / ||llama.cpp||, last row")
    print("layer " + " ".join(f"{a:>10s}" for a, _ in PAIRS))
    rows = len(c["prompt_tokens"]) if step == 0 else 1
    layer = 0
    while f"residual-{layer}" in ours:
        row = []
        for a, b in PAIRS:
            x, y = ours.get(f"{a}-{layer}"), theirs.get(f"{b}-{layer}")
            k = y.size // rows if y is not None else 0  # one row of the traced call
            row.append(rel(x[-k:], y[-k:]) if x is not None and k else float("nan"))
        print(f"{layer:5d} " + " ".join(f"{v:10.2e}" for v in row))
        layer += 1
    print(f"logits {rel(ours['logits'], logits):.3e}")


if __name__ == "__main__":
    main()
