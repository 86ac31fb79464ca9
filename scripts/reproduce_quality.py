#!/usr/bin/env python3
"""Reproduce the reference quality table (tests/fixtures/reference/quality.json) with qkd-train ptq + eval.

Writes docs/eval-results.md (the measured table next to the reference) and exits non-zero when a row
misses the bars (0.2% perplexity, 0.005 accuracy).
  python3 scripts/reproduce_quality.py [--binary build/qkd-train] [--threads 2]
"""
import argparse, json, os, subprocess, sys, tempfile, time

ROWS = [  # name in quality.json, ptq flags (None: the float teacher)
    ("teacher", None),
    ("rtn_w4_per_channel_sym", ["--bits", "4", "--granularity", "per_channel"]),
    ("rtn_w3_per_channel_sym", ["--bits", "3", "--granularity", "per_channel"]),
    ("rtn_w4_g32_sym", ["--bits", "4", "--granularity", "per_group", "--group-size", "32"]),
    ("rtn_w3_g64_asym", ["--bits", "3", "--granularity", "per_group", "--group-size", "64", "--asymmetric"]),
    ("rtn_w2_g32_asym", ["--bits", "2", "--granularity", "per_group", "--group-size", "32", "--asymmetric"]),
]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--model", default="assets/models/kjv-teacher-7m")
    ap.add_argument("--reference", default="tests/fixtures/reference/quality.json")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", default="docs/eval-results.md")
    args = ap.parse_args()
    reference = json.load(open(args.reference))
    ppl_file, mc_file = "assets/data/kjv/kjv-val.u16", "assets/data/kjv/kjv-cloze-val.jsonl"
    lines = ["| model | ppl (ours) | ppl (ref) | rel. diff | acc (ours / ref) | acc_norm (ours / ref) | seconds |",
             "|---|---|---|---|---|---|---|"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in ROWS:
            start = time.time()
            target = []
            if flags is not None:
                student = os.path.join(tmp, name)
                subprocess.run([args.binary, "ptq", "--model", args.model, "--out", student] + flags, check=True)
                target = ["--student", student]
            out = os.path.join(tmp, name + ".json")
            subprocess.run([args.binary, "eval", "--model", args.model] + target +
                           ["--ppl", ppl_file, "--mc", mc_file, "--seq-len", "256", "--batch-size", "16",
                            "--threads", args.threads, "--json", out], check=True, stdout=subprocess.DEVNULL)
            got = json.load(open(out))
            ppl = got["ppl"]["kjv-val.u16"]
            mc = got["mc"]["kjv-cloze-val.jsonl"]
            ref = reference[name]
            ref_ppl, (ref_acc, ref_norm) = ref["kjv-val.u16"], ref["kjv-cloze-val.jsonl"]
            rel = abs(ppl - ref_ppl) / ref_ppl
            row_ok = rel <= 0.002 and abs(mc["acc"] - ref_acc) <= 0.005 and abs(mc["acc_norm"] - ref_norm) <= 0.005
            ok &= row_ok
            lines.append(f"| {name} | {ppl:.3f} | {ref_ppl:.3f} | {100 * rel:.3f}% | {mc['acc']:.3f} / {ref_acc:.3f} | "
                         f"{mc['acc_norm']:.3f} / {ref_norm:.3f} | {time.time() - start:.0f} |" + ("" if row_ok else " MISS"))
            print(lines[-1], flush=True)
    text = ("# Evaluation against the reference implementation\n\n"
            "Measured by `python3 scripts/reproduce_quality.py` (qkd-train ptq + eval, fp32 CPU, "
            f"{args.threads} threads, seq-len 256) against `tests/fixtures/reference/quality.json`.\n\n" + "\n".join(lines) + "\n")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(text)
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
