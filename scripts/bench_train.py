#!/usr/bin/env python3
"""Benchmark the main job: configs/tiny-kjv.json at W4 and a W3 variant on this machine's CPU.

For each run: validation perplexity on kjv-val.u16, cloze accuracy, wall seconds, tokens/s and peak RSS,
read from the run's summary.json. Writes docs/training-results.md.
  python3 scripts/bench_train.py [--binary build/qkd-train] [--runs w4,w3]
"""
import argparse, json, os, shutil, subprocess

RUNS = {
    "w4": ("W4 per channel (configs/tiny-kjv.json as shipped)", []),
    "w3": ("W3 per channel", ["--set", "quant.bits=3", "--set", "optim.lr=0.001"]),
}
PTQ = {"w4": 29.939, "w3": 32.608}  # tests/fixtures/reference/quality.json, round-to-nearest

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--runs", default="w4,w3")
    ap.add_argument("--out", default="docs/training-results.md")
    ap.add_argument("--reuse", action="store_true", help="take finished runs from runs/bench-* instead of rerunning them")
    args = ap.parse_args()
    rows = []
    for key in args.runs.split(","):
        label, overrides = RUNS[key]
        run_dir = f"runs/bench-{key}"
        summary_path = os.path.join(run_dir, "summary.json")
        finished = os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
        if not (args.reuse and finished):
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [args.binary, "--config", "configs/tiny-kjv.json", "--set", f"run_dir={run_dir}"] + overrides
            subprocess.run(cmd, check=True)
        summary = json.load(open(summary_path))
        wall = summary["wall_seconds"]
        config = json.load(open(os.path.join(run_dir, "config.json")))
        ev = summary["final_eval"]
        mc = ev["mc"]["kjv-cloze-val.jsonl"]
        tokens = config["train"]["steps"] * config["train"]["micro_batch"] * config["train"]["grad_accum"] * config["data"]["seq_len"]
        rows.append(f"| {label} | {config['optim']['lr']:g} | {config['train']['steps']} x {tokens // config['train']['steps']} | "
                    f"{ev['ppl']['kjv-val.u16']:.3f} | {PTQ[key]:.3f} | {mc['acc']:.3f} / {mc['acc_norm']:.3f} | {wall:.0f} | "
                    f"{summary['tokens_per_second']:.0f} | {summary['peak_rss_mb']:.0f} |")
        print(rows[-1], flush=True)
    header = ("# Training benchmark (configs/tiny-kjv.json)\n\n"
              f"Measured by `python3 scripts/bench_train.py` on {os.cpu_count()} CPU cores, fp32, teacher and student "
              "on CPU. Wall seconds are the trainer's own (summary.json: from the first step to the end of the final "
              "evaluation of 184 windows + 1,000 cloze items and the export); tokens/s counts training tokens over that time.\n\n"
              "| run | lr | steps x tokens/step | val ppl | RTN PTQ ppl | cloze acc / acc_norm | wall s | tokens/s | peak RSS MB |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(header + "\n".join(rows) + "\n")

if __name__ == "__main__":
    main()
