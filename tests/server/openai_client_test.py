"""The official `openai` Python client against a running `ferrum serve`.

Usage: python3 openai_client_test.py --base-url http://127.0.0.1:PORT/v1 [--api-key KEY]

Keeps generations short (the CPU decodes a few tens of tokens a second).
Prints one line per check and closes with 'N passed, N failed'; exits 1 on
any failure.
"""

import argparse
import json
import sys
import time
import traceback
import urllib.request

import openai

RESULTS = []


def check(fn):
    name = fn.__name__
    t = time.time()
    try:
        fn()
        RESULTS.append((name, True))
        print(f"PASS {name} ({time.time() - t:.1f} s)", flush=True)
    except Exception:  # noqa: BLE001 - report every failure and go on
        RESULTS.append((name, False))
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()
    return fn


def metrics(base_url):
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    user = [{"role": "user", "content": "Write a Python function that adds two numbers."}]

    @check
    def chat():
        r = client.chat.completions.create(model=model, messages=user, max_tokens=8, temperature=0)
        c = r.choices[0]
        assert c.message.role == "assistant"
        assert isinstance(c.message.content, str) and c.message.content, r
        assert c.finish_reason in ("stop", "length"), c.finish_reason
        assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 10, r.usage
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    @check
    def streaming_chat_matches_non_streaming():
        whole = client.chat.completions.create(model=model, messages=user, max_tokens=8, temperature=0)
        stream = client.chat.completions.create(
            model=model, messages=user, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
        )
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
        assert finish == whole.choices[0].finish_reason
        assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

    @check
    def completions_with_logprobs():
        r = client.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=5, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        assert len(lp.tokens) == 5 == len(lp.token_logprobs), lp
        assert all(x <= 0 for x in lp.token_logprobs)
        assert all(len(t) == 2 for t in lp.top_logprobs), lp.top_logprobs
        # Greedy: the chosen token is the most likely one.
        for tok, lps, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            assert abs(max(top.values()) - lps) < 1e-4, (tok, lps, top)
        assert "".join(lp.tokens) == r.choices[0].text

    @check
    def chat_n2():
        r = client.chat.completions.create(model=model, messages=user, max_tokens=6, n=2, temperature=0.9, seed=5)
        assert [c.index for c in r.choices] == [0, 1]
        assert all(c.message.content for c in r.choices)
        assert 2 <= r.usage.completion_tokens <= 12, r.usage

    @check
    def stop_strings():
        base = client.completions.create(model=model, prompt="def add(a, b):\n", max_tokens=12, temperature=0)
        text = base.choices[0].text
        assert len(text) >= 6, repr(text)
        stop = text[3:6]
        cut = client.completions.create(model=model, prompt="def add(a, b):\n", max_tokens=12, temperature=0, stop=[stop])
        assert cut.choices[0].text == text[: text.index(stop)], (cut.choices[0].text, text, stop)
        assert cut.choices[0].finish_reason == "stop"

    @check
    def seeded_sampling_is_reproducible():
        kw = dict(model=model, messages=user, max_tokens=8, temperature=1.0, top_p=0.95, seed=1234)
        a = client.chat.completions.create(**kw).choices[0].message.content
        b = client.chat.completions.create(**kw).choices[0].message.content
        assert a == b, (a, b)

    @check
    def errors():
        try:
            client.chat.completions.create(model=model, messages=[], max_tokens=4)
            raise AssertionError("empty messages accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body["param"] == "messages", e.body
        try:
            client.chat.completions.create(model="no-such-model", messages=user, max_tokens=4)
            raise AssertionError("unknown model accepted")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found", e.body
        try:
            client.completions.create(model=model, prompt="hello " * 3000, max_tokens=4)
            raise AssertionError("over-long prompt accepted")
        except openai.BadRequestError as e:
            assert e.body["code"] == "context_length_exceeded", e.body
        try:
            client.chat.completions.create(model=model, messages=user, max_tokens=4, n=0)
            raise AssertionError("n=0 accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == "n", e.body

    @check
    def prefix_cache_reuses_shared_prompt():
        shared = "You are a careful assistant. " + " ".join(f"item{i}" for i in range(70)) + "\n"
        a = client.completions.create(model=model, prompt=shared + "First question:", max_tokens=2, temperature=0)
        m0 = metrics(args.base_url)
        b = client.completions.create(model=model, prompt=shared + "Second one:", max_tokens=2, temperature=0)
        m1 = metrics(args.base_url)
        cached = b.usage.prompt_tokens_details.cached_tokens
        assert a.usage.prompt_tokens > 150 and cached >= 150, (a.usage, b.usage)
        prefilled = m1["ferrum_prefill_tokens_total"] - m0["ferrum_prefill_tokens_total"]
        assert prefilled == b.usage.prompt_tokens - cached, (prefilled, b.usage)

    @check
    def disconnect_frees_blocks():
        m0 = metrics(args.base_url)
        stream = client.chat.completions.create(model=model, messages=user, max_tokens=200, stream=True, extra_body={"ignore_eos": True})
        seen = 0
        for _ in stream:
            seen += 1
            if seen == 3:
                break
        stream.close()
        deadline = time.time() + 30
        while True:
            m = metrics(args.base_url)
            if m["ferrum_num_requests_running"] == 0 and m["ferrum_kv_cache_blocks_used"] == 0:
                break
            assert time.time() < deadline, {k: v for k, v in m.items() if "requests" in k or "kv_" in k}
            time.sleep(0.1)
        assert m["ferrum_client_disconnects_total"] == m0["ferrum_client_disconnects_total"] + 1
        generated = m["ferrum_generation_tokens_total"] - m0["ferrum_generation_tokens_total"]
        assert generated < 100, f"{generated} tokens generated after a disconnect at token 3"

    @check
    def metrics_exposed():
        m = metrics(args.base_url)
        for name in [
            "ferrum_num_requests_running",
            "ferrum_num_requests_waiting",
            "ferrum_kv_cache_blocks_used",
            "ferrum_kv_cache_blocks_total",
            "ferrum_prefix_cache_hit_tokens_total",
            "ferrum_prompt_tokens_total",
            "ferrum_generation_tokens_total",
            "ferrum_time_to_first_token_seconds_count",
            "ferrum_time_per_output_token_seconds_count",
            "ferrum_inter_token_latency_seconds_count",
            "ferrum_e2e_request_latency_seconds_count",
        ]:
            assert name in m, name
        assert m["ferrum_time_to_first_token_seconds_count"] > 0

    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(json.dumps({"model": model}))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
