#!/usr/bin/env python3
"""Optional cross-check: run the fixture GGUF files through llama.cpp (via
llama-cpp-python) and compare its logits with the reference files.

Not used by CI.  llama-cpp-python is a source package; building it takes
about 20 minutes on two cores:
    CMAKE_BUILD_PARALLEL_LEVEL=2 pip install llama-cpp-python==0.3.36
Then:  python3 tools/check_llamacpp_fixture.py

The KV cache is F32 (type_k = type_v = 0) so the F32 files are compared at
full precision; llama.cpp rounds activations for F16/Q8_0 weights, so those
differ from reference-<type>.json by ~4e-3 / ~0.1.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"


def check(fam_dir: Path, ftype: str) -> tuple[float, bool]:
    """(max |logit diff|, greedy equal) over both prompts, prefill + decode."""
    ref_name = "reference.json" if ftype == "f32" else f"reference-{ftype}.json"
    ref = json.loads((fam_dir / ref_name).read_text())
    llm = Llama(model_path=str(fam_dir / f"model-{ftype}.gguf"), n_ctx=64, n_batch=64,
                logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    worst, same = 0.0, True
    for r in ref["results"]:
        prompt, greedy = r["prompt"], r["greedy"]
        llm.reset()
        llm.eval(prompt)                      # one batch: prefill
        for tok in greedy[:-1]:               # then one token per decode step
            llm.eval([tok])
        scores = np.array(llm.scores[: len(prompt) + len(greedy) - 1])
        pre, dec = scores[: len(prompt)], scores[len(prompt) - 1:]
        worst = max(worst, float(np.abs(pre - np.array(r["prefill_logits"])).max()),
                    float(np.abs(dec - np.array(r["decode_logits"])).max()))
        same &= [int(i) for i in dec.argmax(-1)] == greedy
    return worst, same


def main() -> None:
    for fam_dir in sorted(p.parent for p in ROOT.glob("*/reference.json")):
        for ftype in ("f32", "f16", "q8_0"):
            worst, same = check(fam_dir, ftype)
            print(f"{fam_dir.name:>9} {ftype:>5}: llama.cpp max|dlogit| {worst:.3g}, "
                  f"greedy {'same' if same else 'DIFFERS'}", flush=True)


if __name__ == "__main__":
    main()
