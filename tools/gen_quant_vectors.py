#!/usr/bin/env python3
"""Write the GGML quantization test vectors in tests/fixtures/quant/.

For every type Ferrum decodes, a few blocks of raw bytes (random quant
payload, controlled finite scale fields) and the reference dequantized f32
values from gguf-py (`gguf.quants.dequantize`). For the types gguf-py can
encode (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) also a fixed f32 input and
gguf-py's encoding of it. gguf-py has no Q8_1 / Q8_K codec; for those the
reference is the ggml formula `d * q` evaluated in numpy f32.

File layout (all integers u32 little-endian):
    b"FQV1", type_id, n_deq, n_src_bytes, src[n_src_bytes], ref_f32[n_deq],
    n_q, input_f32[n_q], n_q_bytes, ref_bytes[n_q_bytes]      (n_q may be 0)
manifest.json lists the files with their counts and where each reference
came from. Deterministic: fixed seed, so re-running gives identical files.

Usage: python3 tools/gen_quant_vectors.py [--out tests/fixtures/quant]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
from pathlib import Path


def _import_deps():
    try:
        import gguf  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "gguf", "numpy"])
    import gguf
    import numpy
    return gguf, numpy


gguf, np = _import_deps()
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

SEED = 20240611

# (type, number of blocks in the dequantization section)
DEQUANT_TYPES = [
    (T.F32, 96), (T.F16, 128), (T.BF16, 128),
    (T.Q4_0, 16), (T.Q4_1, 16), (T.Q5_0, 16), (T.Q5_1, 16), (T.Q8_0, 16), (T.Q8_1, 16),
    (T.Q2_K, 6), (T.Q3_K, 6), (T.Q4_K, 6), (T.Q5_K, 6), (T.Q6_K, 6), (T.Q8_K, 6),
    (T.IQ4_NL, 16), (T.IQ4_XS, 6),
]
# Types whose gguf-py encoder we compare against (elements of fixed input).
QUANT_TYPES = {T.F16: 256, T.BF16: 256, T.Q8_0: 320, T.Q4_0: 320, T.Q4_1: 320, T.Q5_0: 320, T.Q5_1: 320}

# Byte offsets of the f16 scale fields inside one block (the rest is payload).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q8_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0],
}


def scale_values(rng, n: int) -> "np.ndarray":
    """n f16-representable, finite scales: log-uniform magnitudes, random sign,
    plus fixed special cases (zero, negative zero, f16 subnormals, large)."""
    mags = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), size=n)).astype(np.float32)
    signs = np.where(rng.random(n) < 0.25, -1.0, 1.0).astype(np.float32)
    vals = (mags * signs).astype(np.float16)
    specials = np.array([0.0, -0.0, 6e-8, 3e-5, -1e-3, 512.0], dtype=np.float16)
    k = max(1, n // 3)  # at most a third of the blocks get a special scale
    vals[:k] = rng.choice(specials, size=k, replace=False)
    return vals


def sizes(qtype) -> tuple[int, int]:
    """(elements, bytes) per block. gguf-py lists Q8_1 as 40 bytes (f32 d and
    s), but ggml's block_q8_1 stores them as two f16: 36 bytes."""
    if qtype == T.Q8_1:
        return 32, 36
    return gguf.GGML_QUANT_SIZES[qtype]


def random_blocks(rng, qtype, n_blocks: int) -> bytes:
    block_size, type_size = sizes(qtype)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype == T.Q8_K:
        d = np.exp(rng.uniform(np.log(1e-5), np.log(1.0), size=n_blocks)).astype(np.float32)
        d[0] = 0.0
        d[1] = -d[1]
        d[2] = np.float32(1e-40)  # f32 subnormal
        raw[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
    else:
        for off in F16_FIELDS[qtype]:
            vals = scale_values(rng, n_blocks)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return raw.tobytes()


def float_elements(rng, qtype, n: int) -> bytes:
    vals = (rng.standard_normal(n) * np.exp(rng.uniform(-12, 8, size=n))).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 6e-8, 65504.0, 1.0, -2.5],
                        dtype=np.float32)
    vals[:len(specials)] = specials
    if qtype == T.F32:
        return vals.tobytes()
    if qtype == T.F16:
        return vals.astype(np.float16).tobytes()
    # BF16: arbitrary 16-bit patterns cover every exponent, NaN payloads included.
    return rng.integers(0, 1 << 16, size=n, dtype=np.uint16).tobytes()


def reference_dequant(qtype, src: bytes) -> "np.ndarray":
    data = np.frombuffer(src, dtype=np.uint8)
    if qtype == T.Q8_1:
        blocks = data.reshape(-1, 36)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = blocks[:, 4:].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if qtype == T.Q8_K:
        blocks = data.reshape(-1, 292)
        d = blocks[:, 0:4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if qtype == T.F32:
        return data.copy().view(np.float32)
    return np.asarray(dequantize(data.copy(), qtype), dtype=np.float32).reshape(-1)


def quant_input(rng, qtype, n: int) -> "np.ndarray":
    if qtype in (T.F16, T.BF16):
        x = (rng.standard_normal(n) * np.exp(rng.uniform(-20, 12, size=n))).astype(np.float32)
        specials = [0.0, -0.0, np.inf, -np.inf, 70000.0, 65504.0, 65520.0, 1e-8, 3e-8, 1.0 + 2**-11,
                    1.0 + 3 * 2**-11, 1.0 + 2**-8, 3.0e38]
        x[:len(specials)] = np.array(specials, dtype=np.float32)
        if qtype == T.BF16:
            x[len(specials)] = np.nan
        return x
    blocks = (rng.standard_normal((n // 32, 32)) *
              np.exp(rng.uniform(-6, 3, size=(n // 32, 1)))).astype(np.float32)
    blocks[0] = 0.0                       # all zero: d = 0
    blocks[1] = 0.75                      # constant block
    blocks[2] = 0.0
    blocks[2, 5] = -3.0                   # single spike
    # Exact ties for the rounding rules: d = 1 for Q8_0 (amax 127).
    blocks[3] = np.arange(32, dtype=np.float32) - 15.5
    blocks[3, 0] = 127.0
    blocks[4] = -blocks[3]
    return blocks.reshape(-1)


def write_file(path: Path, qtype, src: bytes, ref: "np.ndarray", qin, qref: bytes) -> None:
    with path.open("wb") as f:
        f.write(b"FQV1")
        f.write(struct.pack("<III", int(qtype), ref.size, len(src)))
        f.write(src)
        f.write(ref.astype("<f4").tobytes())
        n_q = 0 if qin is None else qin.size
        f.write(struct.pack("<I", n_q))
        if qin is not None:
            f.write(qin.astype("<f4").tobytes())
        f.write(struct.pack("<I", len(qref)))
        f.write(qref)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/quant"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    manifest = {
        "format": "FQV1: magic, u32 type_id, u32 n_deq, u32 n_src_bytes, src, f32[n_deq] reference, "
                  "u32 n_q, f32[n_q] input, u32 n_q_bytes, reference bytes (little-endian)",
        "generator": "tools/gen_quant_vectors.py",
        "seed": SEED,
        "gguf_version": getattr(gguf, "__version__", None) or _gguf_version(),
        "numpy_version": np.__version__,
        "files": [],
    }
    for qtype, n_blocks in DEQUANT_TYPES:
        block_size, _ = sizes(qtype)
        n = n_blocks * block_size
        if qtype in (T.F32, T.F16, T.BF16):
            src = float_elements(rng, qtype, n)
        else:
            src = random_blocks(rng, qtype, n_blocks)
        ref = reference_dequant(qtype, src)
        assert ref.size == n, (qtype.name, ref.size, n)
        qin, qref = None, b""
        if qtype in QUANT_TYPES:
            qin = quant_input(rng, qtype, QUANT_TYPES[qtype])
            with np.errstate(all="ignore"):
                qref = np.asarray(quantize(qin, qtype)).view(np.uint8).tobytes()
        name = f"{qtype.name}.bin"
        write_file(out / name, qtype, src, ref, qin, qref)
        manifest["files"].append({
            "file": name, "type": qtype.name, "type_id": int(qtype), "n_deq": n, "src_bytes": len(src),
            "n_quant": 0 if qin is None else int(qin.size), "quant_bytes": len(qref),
            "dequant_reference": "numpy d*q (gguf-py lacks this type)" if qtype in (T.Q8_1, T.Q8_K)
            else "gguf.quants.dequantize",
            "quant_reference": "gguf.quants.quantize" if qin is not None else None,
        })
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(manifest['files'])} files to {out} ({total} bytes)")


def _gguf_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return None


if __name__ == "__main__":
    main()
