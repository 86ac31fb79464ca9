#!/usr/bin/env python3
"""Tokenization throughput of `qkd-train tokenize` against transformers.js (the node reference the
tokenizer tests compare with), on the same file and machine, in one run. Writes the "## Tokenization"
section of docs/PERFORMANCE.md.

    python3 scripts/bench/tokenize_throughput.py [--megabytes 16] [--rounds 2]

The input is the KJV validation chapters (assets/data/kjv/kjv-val.jsonl) repeated to about --megabytes
of text, as a text JSONL. qkd-train writes a .u32 token file with one thread and with every core; node
encodes every record in one thread. Both count the ids of tokenizer(text)["input_ids"]; qkd-train's
time includes reading and writing, node's only the encode loop (its load time is reported apart). The
ratio is the median of --rounds runs, alternated.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from doc_output import replace_section  # noqa: E402

PACKAGES = ["tokenizer-llama3_1", "tokenizer-qwen3"]


def tokenizers_root():
    return os.environ.get("QKD_TOKENIZERS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "qkd-train",
                                                                  "tokenizers")


def make_input(path, megabytes):
    texts = [json.loads(line)["text"] for line in open(os.path.join(ROOT, "assets/data/kjv/kjv-val.jsonl"))]
    written = 0
    with open(path, "w") as out:
        while written < megabytes << 20:
            for t in texts:
                out.write(json.dumps({"text": t}) + "\n")
                written += len(t.encode())
    return written


def run_qkd(binary, models, data, threads, out):
    started = time.perf_counter()
    text = subprocess.run([binary, "tokenize", "--tokenizer", models, "--input", data, "--out", out, "--threads",
                           str(threads)], check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    tokens = int(re.search(r"(\d+) tokens as uint", text).group(1))
    return {"tokens": tokens, "seconds": seconds}


def run_node(models, data):
    library = os.path.join(tokenizers_root(), "node_modules", "@lenml", "tokenizers")
    text = subprocess.run(["node", os.path.join(ROOT, "scripts/bench/tokenize_node.mjs"), library, models, data],
                          check=True, capture_output=True, text=True).stdout
    return json.loads(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "qkd-train"))
    ap.add_argument("--megabytes", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "PERFORMANCE.md"))
    args = ap.parse_args()
    cores = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "texts.jsonl")
        size = make_input(data, args.megabytes)
        for package in PACKAGES:
            models = os.path.join(tokenizers_root(), "node_modules", "@lenml", package, "models")
            runs = {"one": [], "all": [], "node": []}
            for _ in range(args.rounds):
                runs["one"].append(run_qkd(args.binary, models, data, 1, os.path.join(work, "one.u32")))
                runs["node"].append(run_node(models, data))
                runs["all"].append(run_qkd(args.binary, models, data, 0, os.path.join(work, "all.u32")))
            tokens = {k: {r["tokens"] for r in v} for k, v in runs.items()}
            if len(tokens["one"] | tokens["all"] | tokens["node"]) != 1:
                sys.exit(f"{package}: token counts differ between the runs: {tokens}")
            rate = {k: statistics.median(r["tokens"] / r["seconds"] for r in v) for k, v in runs.items()}
            rows.append((package, runs["one"][0]["tokens"], rate, statistics.median(r["load_seconds"] for r in runs["node"])))
            print(package, rate, flush=True)
    lines = [
        "## Tokenization",
        "",
        f"Measured by `python3 scripts/bench/tokenize_throughput.py --megabytes {args.megabytes} --rounds {args.rounds}` "
        f"on this {cores}-core machine: {size / 2**20:.1f} MB of KJV text (the validation chapters repeated) as a "
        "text JSONL, tokenized to tokenizer(text)[\"input_ids\"]. qkd-train: `qkd-train tokenize` writing a .u32 file "
        "(reading, tokenizing and writing timed together); the peer: transformers.js (`@lenml/tokenizers` 3.7.2, "
        "the tokenizer tests' reference) encoding each record in node, its load time left out. Medians of the "
        "alternated rounds; every run produced the same token count.",
        "",
        "| tokenizer | tokens | node tokens/s | qkd-train, 1 thread | ratio | qkd-train, all cores | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for package, tokens, rate, load in rows:
        lines.append(f"| {package.removeprefix('tokenizer-')} | {tokens:,} | {rate['node']:,.0f} | {rate['one']:,.0f} | "
                     f"{rate['one'] / rate['node']:.1f}x | {rate['all']:,.0f} | {rate['all'] / rate['node']:.1f}x |")
    replace_section(args.out, "## Tokenization", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
