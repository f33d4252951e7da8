#!/usr/bin/env python3
"""How far llama.cpp's own logits move between its decode path and its
prefill path, measured on the eight reference prompts.

The reference continuations (tests/fixtures/reference/visible_ref.json) were
produced by llama.cpp decoding one token at a time. This script re-scores the
same token sequences with llama-cpp-python in one prefill (all logits) and in
token-by-token decode, and prints the mean / max |Δ logprob| of the reference
top-5 tokens for each mode. Ferrum's own figure comes from
`cargo test -p ferrum-model --test real_model top5 -- --nocapture`.

Needs llama-cpp-python (pip builds it from source: ~20 minutes on 2 cores).
Usage: python3 tools/llamacpp_logprob_drift.py MODEL.gguf
"""
import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

REF = Path(__file__).resolve().parent.parent / "tests/fixtures/reference/visible_ref.json"


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - m - np.log(np.exp(row - m).sum())


def drift(cases, rows_of):
    diffs = []
    for c in cases:
        rows = rows_of(c)
        for step, top in enumerate(c["top5_per_step"]):
            lp = log_softmax(rows[step])
            diffs += [abs(lp[t["id"]] - t["logprob"]) for t in top]
    return np.mean(diffs), np.max(diffs)


def main():
    model = sys.argv[1]
    cases = json.loads(REF.read_text())
    llm = Llama(model_path=model, n_ctx=512, n_threads=2, flash_attn=True, logits_all=True, verbose=False)

    def prefill(c):
        toks = c["prompt_tokens"] + c["completion_tokens"][:-1]
        llm.reset()
        llm.eval(toks)
        n = len(c["prompt_tokens"])
        return [llm.scores[n - 1 + i] for i in range(len(c["completion_tokens"]))]

    def decode(c):
        llm.reset()
        llm.eval(c["prompt_tokens"])
        rows = [np.array(llm.scores[llm.n_tokens - 1])]
        for t in c["completion_tokens"][:-1]:
            llm.eval([t])
            rows.append(np.array(llm.scores[llm.n_tokens - 1]))
        return rows

    for name, f in (("decode", decode), ("prefill", prefill)):
        mean, mx = drift(cases, f)
        print(f"llama.cpp {name:7}: mean |d logprob| {mean:.4f}, max {mx:.4f}")


if __name__ == "__main__":
    main()
