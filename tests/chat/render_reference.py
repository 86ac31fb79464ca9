#!/usr/bin/env python3
"""Reference renderer for tests/unit/test_chat_template.cpp: renders chat-template cases with jinja2
exactly the way transformers' apply_chat_template does (utils/chat_template_utils.py,
_compile_jinja_template and render_jinja_template), so the C++ renderer can be compared byte for byte.

    render_reference.py JOB.json OUT.jsonl

JOB.json:
  {"tokenizer_config": PATH}            chat_template and special tokens read from a tokenizer_config.json
  or {"template_file": PATH, "special_tokens": {"bos_token": "<s>", ...}}
  "fixed_now": "2024-07-26T13:45:00" | null   what strftime_now() sees (null: the real clock)
  "repeat": N                           render every case N times (timing); the output is written once
  "cases": [{"messages": [...], "add_generation_prompt": bool, "variables": {...}}, ...]
OUT.jsonl: one line per case, {"ok": true, "text": "..."} or {"ok": false, "error": "...", "type": "..."};
then a last line {"seconds": total render time}.

Only the jinja2 the system provides is used (Debian's python3-jinja2), no transformers.
"""
import json
import sys
import time
from datetime import datetime

try:
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.stderr.write(
        "render_reference.py: python3-jinja2 is missing; run the test set-up "
        "(bash scripts/bootstrap.sh test, or: apt-get install -y python3-jinja2)\n"
    )
    sys.exit(3)

# transformers' SPECIAL_TOKENS_ATTRIBUTES: what tokenizer.special_tokens_map holds when set.
SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                  "additional_special_tokens"]


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body (the
    tracking of assistant indices is not needed here)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def compile_template(source, fixed_now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers replaces jinja2's HTML-escaping tojson with json.dumps.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return (fixed_now or datetime.now()).strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def token_text(token):
    return token["content"] if isinstance(token, dict) else token


def load_job(job):
    if "tokenizer_config" in job:
        with open(job["tokenizer_config"], encoding="utf-8") as f:
            config = json.load(f)
        source = config["chat_template"]
        if isinstance(source, list):
            source = next(entry["template"] for entry in source if entry["name"] == "default")
        special = {}
        for name in SPECIAL_TOKENS:
            value = config.get(name)
            if isinstance(value, list):
                value = [token_text(v) for v in value]
            elif value is not None:
                value = token_text(value)
            if value:
                special[name] = value
        return source, special
    with open(job["template_file"], encoding="utf-8") as f:
        return f.read(), dict(job.get("special_tokens", {}))


def render(template, special, case):
    # render_jinja_template: messages, tools, documents, add_generation_prompt, then the tokenizer's
    # special tokens and the caller's keyword arguments.
    context = {"messages": case["messages"], "tools": None, "documents": None,
               "add_generation_prompt": case.get("add_generation_prompt", False)}
    context.update(special)
    context.update(case.get("variables", {}))
    return template.render(**context)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    source, special = load_job(job)
    fixed_now = datetime.fromisoformat(job["fixed_now"]) if job.get("fixed_now") else None
    template = compile_template(source, fixed_now)
    results = []
    start = time.perf_counter()
    for _ in range(max(1, job.get("repeat", 1))):
        results = []
        for case in job["cases"]:
            try:
                results.append({"ok": True, "text": render(template, special, case)})
            except Exception as e:  # noqa: BLE001 -- every failure is compared with the C++ one
                results.append({"ok": False, "error": str(e), "type": type(e).__name__})
    seconds = time.perf_counter() - start
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.write(json.dumps({"seconds": seconds}) + "\n")


if __name__ == "__main__":
    main()
