#!/usr/bin/env python3
"""Golden token ids for ferrum-text's tokenizer tests.

Writes, under tests/fixtures/text/:

  corpus_goldens.json  ids of every text in corpus.json under the default
                       model's tokenizer (Qwen2.5-Coder-0.5B-Instruct GGUF),
                       as Hugging Face `tokenizers` gives them. The reference
                       tokenizer is built by transformers' own GGUF conversion
                       (AutoTokenizer.from_pretrained(dir, gguf_file=...)),
                       an implementation independent of ferrum's. `ids` parse
                       special tokens (HF's default), `ids_plain` do not
                       (encode_special_tokens = True). Before writing, the
                       reference is checked against llama.cpp's prompt ids in
                       llamacpp_prompt_tokens.json.
  spm_tiny.json        a small SentencePiece BPE model (byte fallback) trained
                       here with the `sentencepiece` library, converted to GGUF
                       vocabulary data the way llama.cpp's converter does
                       (pieces, scores, token types), with `sentencepiece`'s
                       own ids for every corpus text.
  bpe_tiny.json        a small byte-level BPE trained with HF `tokenizers`,
                       as GGUF vocabulary data with pre "llama-bpe", and the
                       ids HF `tokenizers` gives with Llama 3's split regex and
                       ignore_merges.

Run from the repository root:
  python3 tools/gen_tokenizer_goldens.py [MODEL.gguf] [--llama-tokenize BIN]
With --llama-tokenize (a built llama.cpp `llama-tokenize`), the corpus ids are
also checked against llama.cpp itself on a vocabulary-only copy of the model
(the run fails if llama.cpp disagrees with the reference anywhere), and
llama.cpp's own ids for the two tiny vocabularies are stored in their entries
(`llamacpp`: `ids` with special tokens parsed, `ids_plain` without), which the
Rust tests require. The committed fixtures were made this way with the
llama.cpp source vendored in llama-cpp-python 0.3.36 (see
shared/bench/prepare-llamacpp.sh; a CPU build of the `llama-tokenize` target).
MODEL defaults to $FERRUM_DEFAULT_MODEL or
~/.cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
(scripts/fetch-default-model.sh fetches it). Needs no torch; installs
transformers, gguf, sentencepiece and tokenizers with pip when missing.
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "text"
MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

# Llama 3's split regex as its tokenizer.json spells it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def ensure(module, package):
    try:
        importlib.import_module(module)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])


def versions():
    import importlib.metadata as md

    return {p: md.version(p) for p in ("transformers", "tokenizers", "gguf", "sentencepiece")}


def load_corpus():
    return json.loads((FIX / "corpus.json").read_text(encoding="utf-8"))["texts"]


def write_json(name, obj):
    path = FIX / name
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def default_model_goldens(model_path, corpus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    backend = tok.backend_tokenizer

    refs = json.loads((FIX / "llamacpp_prompt_tokens.json").read_text(encoding="utf-8"))["prompts"]
    for r in refs:
        got = backend.encode(r["prompt"], add_special_tokens=False).ids
        if got != r["prompt_tokens"]:
            sys.exit(f"reference tokenizer disagrees with llama.cpp on {r['id']}: {got} vs {r['prompt_tokens']}")

    entries = []
    for c in corpus:
        backend.encode_special_tokens = False
        ids = backend.encode(c["text"], add_special_tokens=False).ids
        backend.encode_special_tokens = True
        plain = backend.encode(c["text"], add_special_tokens=False).ids
        entries.append({"name": c["name"], "ids": ids, "ids_plain": plain})
    backend.encode_special_tokens = False
    return {
        "model": model_path.name,
        "reference": "transformers AutoTokenizer.from_pretrained(gguf_file=...) backend (HF tokenizers)",
        "versions": versions(),
        "entries": entries,
    }


def training_text(corpus):
    english = (
        "The quick brown fox jumps over the lazy dog. It's a truth universally acknowledged that "
        "a tokenizer must round-trip every string. We'll test spaces, tabs and newlines; they've "
        "broken many tokenizers before. Numbers like 12345 and 3.14159 appear too. "
    )
    lines = [c["text"] for c in corpus if c["text"]] * 3
    lines += [english * 4] * 20
    return lines


def spm_tiny(corpus):
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as d:
        text_path = Path(d) / "train.txt"
        # One sentence per line; embedded newlines are training noise only.
        text_path.write_text("\n".join(t.replace("\n", " ") for t in training_text(corpus)), encoding="utf-8")
        prefix = str(Path(d) / "tiny")
        spm.SentencePieceTrainer.train(
            input=str(text_path),
            model_prefix=prefix,
            model_type="bpe",
            vocab_size=1000,
            byte_fallback=True,
            normalization_rule_name="identity",
            add_dummy_prefix=True,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            character_coverage=0.98,
            user_defined_symbols=["<|im_start|>", "<|im_end|>"],
            num_threads=1,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_unused(i):
            types.append(5)
        elif sp.is_byte(i):
            types.append(6)
        elif tokens[-1] in ("<|im_start|>", "<|im_end|>"):
            types.append(4)
        else:
            types.append(1)
    vocab = {
        "model": "llama",
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "bos": sp.bos_id(),
        "eos": sp.eos_id(),
        "unknown": sp.unk_id(),
        "add_bos": True,
    }
    entries = [{"name": c["name"], "ids": sp.encode(c["text"])} for c in corpus]
    return {
        "reference": "sentencepiece SentencePieceProcessor.encode (BPE, byte_fallback, identity normalization)",
        "versions": versions(),
        "vocab": vocab,
        "entries": entries,
    }


def bpe_tiny(corpus):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = split
    trainer = trainers.BpeTrainer(
        vocab_size=900,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
        show_progress=False,
    )
    tok.train_from_iterator(training_text(corpus), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab_map, merges = model["vocab"], model["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    # Rebuild with ignore_merges (as Llama 3's tokenizer.json has it).
    ref = Tokenizer(models.BPE(vocab=vocab_map, merges=[tuple(m.split(" ", 1)) for m in merges], ignore_merges=True))
    ref.pre_tokenizer = split
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|begin_of_text|>", "<|eot_id|>")])

    tokens = [None] * len(vocab_map)
    for t, i in vocab_map.items():
        tokens[i] = t
    types = [3 if t in ("<|begin_of_text|>", "<|eot_id|>") else 1 for t in tokens]
    vocab = {
        "model": "gpt2",
        "pre": "llama-bpe",
        "tokens": tokens,
        "token_types": types,
        "merges": merges,
        "bos": vocab_map["<|begin_of_text|>"],
        "eos": vocab_map["<|eot_id|>"],
    }
    entries = [{"name": c["name"], "ids": ref.encode(c["text"], add_special_tokens=False).ids} for c in corpus]
    return {
        "reference": "HF tokenizers BPE(ignore_merges=True) with Llama 3's split regex",
        "versions": versions(),
        "vocab": vocab,
        "entries": entries,
    }


def vocab_only_gguf(src, dst):
    """A copy of `src`'s metadata with no tensors (llama-tokenize loads vocab only)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(str(src))
    writer = GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_gguf(vocab, dst):
    """A vocabulary-only GGUF (with the llama hparams llama.cpp insists on) for a tiny vocab."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(dst), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_tokenizer_model(vocab["model"])
    if "pre" in vocab:
        w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    if "scores" in vocab:
        w.add_token_scores(vocab["scores"])
    w.add_token_types(vocab["token_types"])
    if "merges" in vocab:
        w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    if "unknown" in vocab:
        w.add_unk_token_id(vocab["unknown"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llamacpp_ids(binary, gguf_path, corpus):
    """llama.cpp's ids (special tokens parsed, and not) for every corpus text, no BOS."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        text_path = Path(d) / "text.txt"
        for c in corpus:
            text_path.write_bytes(c["text"].encode("utf-8"))
            entry = {}
            for key, extra in (("ids", []), ("ids_plain", ["--no-parse-special"])):
                res = subprocess.run(
                    [binary, "-m", str(gguf_path), "-f", str(text_path), "--ids", "--no-bos", "--no-escape",
                     "--log-disable"] + extra,
                    capture_output=True,
                    check=True,
                ).stdout.decode()
                entry[key] = json.loads([line for line in res.splitlines() if line.startswith("[")][-1])
            out.append(entry)
    return out


def llamacpp_check(binary, model_path, corpus, goldens):
    """Runs llama.cpp's tokenizer on every corpus text; exits on any difference."""
    with tempfile.TemporaryDirectory() as d:
        vocab = Path(d) / "vocab.gguf"
        vocab_only_gguf(model_path, vocab)
        got = llamacpp_ids(binary, vocab, corpus)
    for c, g, e in zip(corpus, got, goldens["entries"]):
        for key in ("ids", "ids_plain"):
            if g[key] != e[key]:
                sys.exit(f"llama.cpp disagrees on {c['name']} ({key}): {g[key]} vs {e[key]}")
    goldens["llamacpp_check"] = f"{Path(binary).name}: identical ids for all {len(corpus)} texts, both modes"


def add_llamacpp_ids(binary, fixture, corpus):
    """Stores llama.cpp's own ids for a tiny vocabulary beside the reference ids."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tiny.gguf"
        tiny_gguf(fixture["vocab"], path)
        got = llamacpp_ids(binary, path, corpus)
    for e, g in zip(fixture["entries"], got):
        e["llamacpp"] = g
    fixture["llamacpp"] = f"entries' 'llamacpp' ids come from {Path(binary).name} on this vocabulary"


def main():
    for module, package in (("transformers", "transformers"), ("gguf", "gguf"),
                            ("sentencepiece", "sentencepiece"), ("tokenizers", "tokenizers")):
        ensure(module, package)
    args = sys.argv[1:]
    llama_tokenize = None
    if "--llama-tokenize" in args:
        i = args.index("--llama-tokenize")
        llama_tokenize = args[i + 1]
        del args[i : i + 2]
    if args:
        model = Path(args[0])
    else:
        model = Path(os.environ.get("FERRUM_DEFAULT_MODEL", Path.home() / ".cache/ferrum/models" / MODEL_NAME))
    if not model.is_file():
        sys.exit(f"{model} not found: run scripts/fetch-default-model.sh")
    corpus = load_corpus()
    goldens = default_model_goldens(model.resolve(), corpus)
    if llama_tokenize:
        llamacpp_check(llama_tokenize, model.resolve(), corpus, goldens)
    write_json("corpus_goldens.json", goldens)
    for name, build in (("spm_tiny.json", spm_tiny), ("bpe_tiny.json", bpe_tiny)):
        fixture = build(corpus)
        if llama_tokenize:
            add_llamacpp_ids(llama_tokenize, fixture, corpus)
        write_json(name, fixture)


if __name__ == "__main__":
    main()
