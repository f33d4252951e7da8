#!/usr/bin/env python3
"""Optional cross-check of `ferrum synth` and `ferrum quantize` against
llama.cpp (through llama-cpp-python). Not used by CI.

llama-cpp-python is a source package (about 20 minutes to build on two
cores):  CMAKE_BUILD_PARALLEL_LEVEL=2 pip install llama-cpp-python==0.3.36
It also needs numpy and gguf (pip install numpy gguf).

    cargo build -p ferrum-cli
    python3 tools/check_llamacpp_load.py [--ferrum target/debug/ferrum] [--big]

Checks, each printed as one line, then "N passed, M failed":
 1. synth: every *-tiny preset (Q4_K_M and Q8_0) loads in llama.cpp, its
    vocabulary tokenizes text, and evaluating tokens gives finite logits.
 2. quantize: each fixture family, from the HF directory and from the F32
    GGUF, to Q8_0 / Q6_K / Q5_K_M / Q4_K_M / F16, loads in llama.cpp; its
    logits are compared with transformers' F32 reference (reported), and the
    file equals llama.cpp's own llama_model_quantize output of the F32
    fixture tensor for tensor (types and bytes).
 3. K-quants at full block width: a tiny preset synthesized as F16 is
    quantized by both Ferrum and llama.cpp to Q4_K_M / Q5_K_M / Q6_K and
    the tensors compared byte for byte.
 4. tokenizers: the vocabulary quantize converts from tokenizer.json, and
    the tokenizer.json synth writes for safetensors, tokenize text in
    llama.cpp as the Hugging Face `tokenizers` package does.
 5. --big: qwen3-0.6b synthesized with the default model's tokenizer as
    donor (if present) loads in llama.cpp and tokenizes text.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "models"
FAMILIES = ["llama", "qwen2", "qwen3", "qwen3moe"]
TINY = ["qwen3moe-tiny", "qwen3-tiny", "llama-tiny", "qwen2-tiny"]
FTYPES = {"Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15, "F16": 1}
DEFAULT_MODEL = Path.home() / ".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

results: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str) -> None:
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def ferrum(binary: str, *args: str) -> None:
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def llama_quantize(src: Path, dst: Path, ftype: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src}, {ftype}) returned {rc}")


def same_tensors(a: Path, b: Path) -> tuple[bool, str]:
    """Same tensor names and types, and the same bytes up to a few blocks
    (at most 2 or 2% per tensor) where the two encoders round a near-tie
    differently (seen for Q6_K only)."""
    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    if set(ta) != set(tb):
        return False, f"tensor names differ: {sorted(set(ta) ^ set(tb))[:4]}"
    bad, near, blocks_differ, blocks, near_types = [], 0, 0, 0, set()
    for name, t in ta.items():
        u = tb[name]
        if t.tensor_type != u.tensor_type:
            bad.append(f"{name} {t.tensor_type.name} vs {u.tensor_type.name}")
            continue
        size = gguf.GGML_QUANT_SIZES[t.tensor_type][1]
        x = np.asarray(t.data).view(np.uint8).reshape(-1, size)
        y = np.asarray(u.data).view(np.uint8).reshape(-1, size)
        differ = int((x != y).any(axis=1).sum())
        blocks += len(x)
        if differ:
            near += 1
            blocks_differ += differ
            near_types.add(t.tensor_type.name)
            if differ > max(2, len(x) // 50):
                bad.append(f"{name}: {differ} of {len(x)} blocks differ")
    types = sorted({t.tensor_type.name for t in ta.values()})
    if bad:
        return False, "; ".join(bad[:4])
    if near:
        return True, (f"{len(ta)} tensors, same types ({', '.join(types)}); bytes identical except "
                      f"{blocks_differ} of {blocks} blocks in {near} {'/'.join(sorted(near_types))} tensors (encoder rounding ties)")
    return True, f"{len(ta)} tensors identical ({', '.join(types)})"


def load_and_eval(path: Path, tokens: list[int]) -> np.ndarray:
    llm = Llama(model_path=str(path), n_ctx=64, n_batch=64, logits_all=True, verbose=False, n_threads=2,
                type_k=0, type_v=0)
    text_ids = llm.tokenize(b"hello world, the cat sat", add_bos=False)
    if not text_ids:
        raise RuntimeError("tokenizer produced no tokens")
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens)])
    del llm
    return scores


def check_synth(binary: str, tmp: Path) -> None:
    for preset in TINY:
        for quant in ["Q4_K_M", "Q8_0"]:
            out = tmp / f"{preset}-{quant}.gguf"
            ferrum(binary, "synth", preset, "-o", str(out), "--quant", quant)
            try:
                s = load_and_eval(out, [5, 300, 17, 42, 7, 99])
                ok = bool(np.isfinite(s).all()) and float(s.std()) > 1e-3
                report(f"synth {preset} {quant}", ok, f"llama.cpp loads it; logits finite, std {s.std():.3f}, argmax {s.argmax(-1).tolist()}")
            except Exception as e:  # noqa: BLE001 - report and go on
                report(f"synth {preset} {quant}", False, repr(e))


def check_quantize(binary: str, tmp: Path) -> None:
    for fam in FAMILIES:
        ref = json.loads((FIXTURES / fam / "reference.json").read_text())
        for ty, ftype in FTYPES.items():
            theirs = tmp / f"{fam}-llamacpp-{ty}.gguf"
            llama_quantize(FIXTURES / fam / "model-f32.gguf", theirs, ftype)
            for src in ["hf", "model-f32.gguf"]:
                out = tmp / f"{fam}-{src}-{ty}.gguf"
                name = f"quantize {fam}/{src} {ty}"
                try:
                    ferrum(binary, "quantize", str(FIXTURES / fam / src), str(out), "--type", ty)
                    same, detail = same_tensors(out, theirs)
                    worst, greedy_same = 0.0, True
                    for r in ref["results"]:
                        s = load_and_eval(out, r["prompt"])
                        want = np.array(r["prefill_logits"])
                        worst = max(worst, float(np.linalg.norm(s - want, axis=-1).max() / np.linalg.norm(want, axis=-1).min()))
                        greedy_same &= int(s[-1].argmax()) == r["greedy"][0]
                    report(name, same, f"llama.cpp loads it; rel err vs transformers F32 {worst:.3f}, "
                                       f"first greedy token {'same' if greedy_same else 'differs'}; vs llama-quantize: {detail}")
                except Exception as e:  # noqa: BLE001
                    report(name, False, repr(e))


def check_kquants(binary: str, tmp: Path) -> None:
    for preset in ["qwen3-tiny", "qwen3moe-tiny", "llama-tiny"]:
        f16 = tmp / f"{preset}-F16.gguf"
        ferrum(binary, "synth", preset, "-o", str(f16), "--quant", "F16")
        for ty in ["Q4_K_M", "Q5_K_M", "Q6_K"]:
            ours, theirs = tmp / f"{preset}-ours-{ty}.gguf", tmp / f"{preset}-theirs-{ty}.gguf"
            try:
                ferrum(binary, "quantize", str(f16), str(ours), "--type", ty)
                llama_quantize(f16, theirs, FTYPES[ty])
                same, detail = same_tensors(ours, theirs)
                report(f"k-quants {preset} F16 -> {ty}", same, detail)
            except Exception as e:  # noqa: BLE001
                report(f"k-quants {preset} F16 -> {ty}", False, repr(e))


def check_tokenizers(binary: str, tmp: Path) -> None:
    """The GGUF vocabulary quantize writes from tokenizer.json, and the
    tokenizer.json synth writes beside its safetensors, tokenize text as the
    Hugging Face tokenizer does (llama.cpp vs the `tokenizers` package)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        report("tokenizers", False, "pip install tokenizers")
        return
    texts = ["the cat sat on the mat", "Hello, World! 123 4567", "  leading spaces\nand a newline"]
    pairs = []
    for fam in FAMILIES[:2]:
        out = tmp / f"{fam}-tok.gguf"
        ferrum(binary, "quantize", str(FIXTURES / fam / "hf"), str(out), "--type", "Q8_0")
        pairs.append((f"quantize {fam}/hf vocabulary", out, FIXTURES / fam / "hf" / "tokenizer.json"))
    for preset in ["qwen3-tiny"]:
        d, g = tmp / f"{preset}-hf", tmp / f"{preset}.gguf"
        ferrum(binary, "synth", preset, "--format", "safetensors", "-o", str(d))
        ferrum(binary, "synth", preset, "-o", str(g))
        pairs.append((f"synth {preset} tokenizer.json", g, d / "tokenizer.json"))
    for name, gguf_path, tj in pairs:
        llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        hf = Tokenizer.from_file(str(tj))
        bad = [t for t in texts if llm.tokenize(t.encode(), add_bos=False, special=False) != hf.encode(t, add_special_tokens=False).ids]
        report(name, not bad, f"{len(texts) - len(bad)}/{len(texts)} texts tokenize identically in llama.cpp and HF tokenizers"
               + (f"; differ: {bad}" if bad else ""))
        del llm


def check_big(binary: str, tmp: Path) -> None:
    out = tmp / "qwen3-0.6b.gguf"
    args = ["synth", "qwen3-0.6b", "-o", str(out)]
    if DEFAULT_MODEL.exists():
        args += ["--donor", str(DEFAULT_MODEL)]
    ferrum(binary, *args)
    try:
        s = load_and_eval(out, [9707, 1879, 11, 279, 8251, 7578])
        report("synth qwen3-0.6b Q4_K_M", bool(np.isfinite(s).all()),
               f"{out.stat().st_size / 2**20:.0f} MiB; llama.cpp loads it; logits finite, std {s.std():.3f}")
    except Exception as e:  # noqa: BLE001
        report("synth qwen3-0.6b Q4_K_M", False, repr(e))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferrum", default=str(ROOT / "target" / "debug" / "ferrum"))
    ap.add_argument("--big", action="store_true", help="also synthesize qwen3-0.6b (about 400 MB)")
    args = ap.parse_args()
    if not os.access(args.ferrum, os.X_OK):
        print(f"no ferrum binary at {args.ferrum}: run `cargo build -p ferrum-cli` or pass --ferrum", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ferrum-llamacpp-") as d:
        tmp = Path(d)
        check_synth(args.ferrum, tmp)
        check_quantize(args.ferrum, tmp)
        check_kquants(args.ferrum, tmp)
        check_tokenizers(args.ferrum, tmp)
        if args.big:
            check_big(args.ferrum, tmp)
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
