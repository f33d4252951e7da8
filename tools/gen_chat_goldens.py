#!/usr/bin/env python3
"""Golden chat-template renderings for ferrum-text's template tests.

Reads the template strings committed under tests/fixtures/chat/templates/
and renders a set of conversations with transformers'
`apply_chat_template(tokenize=False)` — the reference implementation
(jinja2 sandbox, trim_blocks, lstrip_blocks, loop controls, its own
`tojson`, `raise_exception`, `strftime_now`). No weights and no torch are
needed: the tokenizer object is a one-token stand-in that only carries the
chat template and the special-token strings the template sees.

Writes tests/fixtures/chat/goldens.json: a list of cases
  {name, template, bos_token, eos_token, messages, tools, add_generation_prompt,
   kwargs, expected | error}
where `error` is the message of the exception the template raises.

Templates (their provenance):
  qwen2.5-instruct.jinja  `tokenizer.chat_template` of the default model GGUF
                          (Qwen2.5-Coder-0.5B-Instruct); equal to
                          Qwen/Qwen2.5-7B-Instruct's tokenizer_config.json.
  qwen3.jinja             Qwen/Qwen3-0.6B tokenizer_config.json chat_template
                          (the original Qwen3 release template, with
                          `enable_thinking`).
  llama3.1-instruct.jinja meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json
                          chat_template (4614 bytes).

Run from the repository root:  python3 tools/gen_chat_goldens.py
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "chat"


def ensure(pkgs):
    missing = []
    for mod, spec in pkgs:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(spec)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


ensure([("jinja2", "jinja2>=3.1"), ("transformers", "transformers"), ("tokenizers", "tokenizers")])

import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from tokenizers.models import WordLevel  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402


def stand_in(template, bos, eos):
    core = Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>"))
    kw = {"tokenizer_object": core, "unk_token": "<unk>"}
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    tok = PreTrainedTokenizerFast(**kw)
    tok.chat_template = template
    return tok


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city. Returns <temperature> & 'conditions'.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}

SYS = {"role": "system", "content": "You are a helpful assistant.\nAnswer briefly."}
U1 = {"role": "user", "content": "Write a haiku about Rust."}
A1 = {"role": "assistant", "content": "Borrowed, not owned—\nlifetimes end where scopes close.\nNo dangling pointers."}
U2 = {"role": "user", "content": "  Now one about 日本 and emoji 🦀, with \"quotes\" and a tab\t.  "}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius", "days": 2}}}],
}
CALL_STR_ARGS = {
    "role": "assistant",
    "content": "Let me check.",
    "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"type": "function", "function": {"name": "search", "arguments": {"q": "Paris <events> & news"}}},
    ],
}
TOOL_RESULT = {"role": "tool", "content": "{\"temperature\": 21.5, \"conditions\": \"sunny\"}"}
TOOL_RESULT2 = {"role": "tool", "content": "Paris: 3 events today."}
THINK_A = {"role": "assistant", "content": "<think>\nThe user wants a haiku.\n</think>\n\nBorrowed, not owned."}

QWEN_CASES = [
    ("user", [U1], None, True, {}),
    ("system_user", [SYS, U1], None, True, {}),
    ("multi_turn", [SYS, U1, A1, U2], None, True, {}),
    ("multi_turn_no_gen_prompt", [U1, A1], None, False, {}),
    ("tools", [SYS, {"role": "user", "content": "Weather in Zürich?"}], [WEATHER, SEARCH], True, {}),
    ("tool_call_and_result", [{"role": "user", "content": "Weather in Zürich?"}, CALL, TOOL_RESULT], [WEATHER], True, {}),
    ("two_tool_calls", [{"role": "user", "content": "Paris?"}, CALL_STR_ARGS, TOOL_RESULT, TOOL_RESULT2], [WEATHER, SEARCH], True, {}),
]

QWEN3_EXTRA = [
    ("thinking_on", [SYS, U1], None, True, {"enable_thinking": True}),
    ("thinking_off", [SYS, U1], None, True, {"enable_thinking": False}),
    ("thinking_off_multi_turn", [U1, A1, U2], None, True, {"enable_thinking": False}),
    ("history_with_reasoning", [U1, THINK_A, U2], None, True, {}),
    ("last_assistant_reasoning", [U1, THINK_A], None, False, {"enable_thinking": True}),
    ("reasoning_content_field", [U1, {"role": "assistant", "content": "Done.", "reasoning_content": "\nshort thought\n"}], None, False, {}),
    ("tools_thinking_off", [{"role": "user", "content": "Weather in Zürich?"}, CALL, TOOL_RESULT], [WEATHER], True, {"enable_thinking": False}),
]

LLAMA_CASES = [
    ("user", [U1], None, True, {}),
    ("system_user_date", [SYS, U1], None, True, {"date_string": "01 Jan 2026"}),
    ("multi_turn", [SYS, U1, A1, U2], None, True, {"date_string": "26 Jul 2024"}),
    ("multi_turn_no_gen_prompt", [U1, A1], None, False, {"date_string": "26 Jul 2024"}),
    ("tools_in_user_message", [SYS, {"role": "user", "content": "Weather in Zürich?"}], [WEATHER], True, {"date_string": "26 Jul 2024"}),
    ("tools_in_system", [{"role": "user", "content": "Weather?"}], [WEATHER], True, {"date_string": "26 Jul 2024", "tools_in_user_message": False}),
    ("tool_call_and_result", [{"role": "user", "content": "Weather in Zürich?"}, CALL, TOOL_RESULT], [WEATHER], True, {"date_string": "26 Jul 2024"}),
    ("builtin_tools", [{"role": "user", "content": "Search for Rust news."}], None, True, {"date_string": "26 Jul 2024", "builtin_tools": ["brave_search", "wolfram_alpha"]}),
    ("error_two_tool_calls", [{"role": "user", "content": "Paris?"}, CALL_STR_ARGS], [WEATHER, SEARCH], True, {"date_string": "26 Jul 2024"}),
]

TEMPLATES = [
    ("qwen2.5-instruct.jinja", None, "<|im_end|>", QWEN_CASES),
    ("qwen3.jinja", None, "<|im_end|>", QWEN_CASES + QWEN3_EXTRA),
    ("llama3.1-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", LLAMA_CASES),
]


def main():
    cases = []
    for fname, bos, eos, specs in TEMPLATES:
        template = (FIX / "templates" / fname).read_text(encoding="utf-8")
        tok = stand_in(template, bos, eos)
        for name, messages, tools, gen, kwargs in specs:
            case = {
                "name": f"{fname.removesuffix('.jinja')}/{name}",
                "template": fname,
                "bos_token": bos or "",
                "eos_token": eos or "",
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": gen,
                "kwargs": kwargs,
            }
            try:
                case["expected"] = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=gen, tokenize=False, **kwargs)
            except Exception as e:  # the template's raise_exception
                case["error"] = str(e)
            cases.append(case)
    out = {
        "generator": "tools/gen_chat_goldens.py",
        "transformers": transformers.__version__,
        "cases": cases,
    }
    path = FIX / "goldens.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
