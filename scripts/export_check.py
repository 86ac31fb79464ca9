#!/usr/bin/env python3
"""Exports a finished run in every format and measures what each runtime computes from it.

    python3 scripts/export_check.py [--run runs/tiny-kjv] [--windows 64] [--out docs/export-results.md]

For the run's newest checkpoint: `qkd-train export` to hf (float16 and float32), packed, encodings
and gguf (q4_0); validation perplexity of each through `qkd-train eval` (hf, packed and encodings are
loaded as float models; packed is unpacked from its int4 codes), against the student as qkd-train
computes it (its float32 hf export, whose weights are bitwise the fake-quantized ones); and the GGUF
through llama.cpp (node-llama-cpp, scripts/llama_cpp/compare.mjs) on the same windows: perplexity,
mean |log-prob difference| against qkd-train's float32 export, and argmax agreement.
Writes a markdown table to --out.
"""
import argparse
import array
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "build", "qkd-train")
VAL = os.path.join(ROOT, "assets", "data", "kjv", "kjv-val.u16")


def run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"export_check: {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def perplexity(model_args, seq_len, windows, work, name):
    out = os.path.join(work, f"eval-{name}.json")
    run([BINARY, "eval", *model_args, "--ppl", VAL, "--seq-len", str(seq_len), "--max-windows", str(windows),
         "--threads", "2", "--json", out])
    with open(out) as f:
        return json.load(f)["ppl"]["kjv-val.u16"]


def windows_of(seq_len, count):
    tokens = array.array("H")
    with open(VAL, "rb") as f:
        tokens.frombytes(f.read())
    out = []
    for i in range(count):
        window = tokens[i * seq_len : i * seq_len + seq_len + 1]
        if len(window) < seq_len + 1:
            break
        out.append(list(window))
    return out


def dump_logits(model_dir, windows, work):
    """qkd-train's fp32 log-probabilities of each window's next tokens, through `qkd-train logits`."""
    import struct
    inputs = os.path.join(work, "inputs.safetensors")
    header, blobs, offset = {}, [], 0
    for k, ids in enumerate(windows):
        data = struct.pack(f"<{len(ids)}q", *ids)
        header[f"input_ids_{k}"] = {"dtype": "I64", "shape": [1, len(ids)], "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(inputs, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    out = os.path.join(work, "logits.safetensors")
    run([BINARY, "logits", "--model", model_dir, "--input", inputs, "--output", out])
    with open(out, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))
        body = f.read()
    result = []
    for k, ids in enumerate(windows):
        entry = meta[f"logits_{k}"]
        _, length, vocab = entry["shape"]
        begin, end = entry["data_offsets"]
        values = array.array("f")
        values.frombytes(body[begin:end])
        logprobs, argmax = [], []
        for i in range(length - 1):
            row = values[i * vocab : (i + 1) * vocab]
            top = max(row)
            lse = top + math.log(sum(math.exp(v - top) for v in row))
            logprobs.append(row[ids[i + 1]] - lse)
            argmax.append(max(range(vocab), key=row.__getitem__))
        result.append((logprobs, argmax))
    return result


def llama_cpp(gguf, windows, work):
    request = os.path.join(work, "request.json")
    with open(request, "w") as f:
        json.dump({"evaluate": windows}, f)
    out = run(["node", os.path.join(ROOT, "scripts", "llama_cpp", "compare.mjs"), gguf, request])
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=os.path.join(ROOT, "runs", "tiny-kjv"))
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "export-results.md"))
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.run, "checkpoints")):
        sys.exit(f"export_check: {args.run} has no checkpoints; run the main job first (./build/qkd-train --config configs/tiny-kjv.json)")
    work = tempfile.mkdtemp(prefix="qkd-export-check-")
    started = time.time()
    run([BINARY, "export", "--checkpoint", args.run, "--format", "hf,packed,encodings,gguf", "--out", work + "/fp16"])
    run([BINARY, "export", "--checkpoint", args.run, "--format", "hf", "--dtype", "float32", "--out", work + "/fp32"])
    with open(os.path.join(args.run, "config.json")) as f:
        teacher = json.load(f)["teacher"]["path"]

    rows = []
    rows.append(("hf, float32 (bitwise the fake-quantized student's weights)", perplexity(["--model", work + "/fp32/hf"], args.seq_len, args.windows, work, "fp32")))
    rows.append(("hf, float16", perplexity(["--model", work + "/fp16/hf"], args.seq_len, args.windows, work, "hf16")))
    rows.append(("packed (int4 codes, float16 scales)", perplexity(["--model", work + "/fp16/packed"], args.seq_len, args.windows, work, "packed")))
    rows.append(("encodings (float32 weights)", perplexity(["--model", work + "/fp16/encodings"], args.seq_len, args.windows, work, "enc")))
    rows.append(("teacher (float)", perplexity(["--model", teacher], args.seq_len, args.windows, work, "teacher")))

    windows = windows_of(args.seq_len, args.windows)
    ours = dump_logits(work + "/fp32/hf", windows, work)
    theirs = llama_cpp(work + "/fp16/gguf/model.gguf", windows, work)
    diffs, agree, count, nll = 0.0, 0, 0, 0.0
    for (our_lp, our_arg), entry in zip(ours, theirs["evaluate"]):
        for a, b, x, y in zip(our_lp, entry["logprobs"], our_arg, entry["argmax"]):
            diffs += abs(a - b)
            agree += x == y
            nll -= b
            count += 1
    rows.append((f"gguf q4_0 in llama.cpp (node-llama-cpp {theirs['node_llama_cpp']})", math.exp(nll / count)))
    elapsed = time.time() - started

    lines = ["# Export results", "",
             f"Measured by `python3 scripts/export_check.py --run {os.path.relpath(args.run, ROOT)} --windows {args.windows}` "
             f"({elapsed:.0f} s) on the main job's W4 per-channel student: validation perplexity on the first "
             f"{len(windows)} windows of {args.seq_len} tokens of `kjv-val.u16`, each format loaded by what reads it.", "",
             "| student as | perplexity |", "|---|---|"]
    lines += [f"| {name} | {ppl:.4f} |" for name, ppl in rows]
    lines += ["", f"llama.cpp against qkd-train (float32 export) on the same {count} positions: mean |log-prob "
              f"difference| {diffs / count:.4f} nats, same argmax on {100.0 * agree / count:.2f}% of positions.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
