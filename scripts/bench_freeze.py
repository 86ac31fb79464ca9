#!/usr/bin/env python3
"""Step time with frozen projections: does a freeze really skip the weight-gradient compute?

Runs build/qkd-bench-freeze (benchmarks/freeze_step_time.cpp): one process, one fixed batch of the
shipped teacher's training data, W4 per-channel student; every iteration times one step (teacher
forward, student forward, KD loss, backward) for each freeze setting back to back, so the machine's
drift hits all settings alike and each setting's time is compared with the same iteration's `none`.
Next to it, the share of the step's matmul work that the freeze removes, counted from the model config.
Writes docs/freeze-benchmark.md.
  python3 scripts/bench_freeze.py [--iterations 30 --micro-batch 8 --seq-len 256]
"""
import argparse, json, os, statistics, subprocess

from doc_output import write_keeping_reading

def removed_share(frozen, model_dir):
    """Weight-gradient multiply-adds of the frozen projections as a share of the step's linear-layer
    multiply-adds: teacher forward, student forward, student input gradients and student weight gradients,
    each over all projections and lm_head (every parameter trains by default; the embedding's gradient is
    a scatter, not a matmul)."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    h, ff = c["hidden_size"], c["intermediate_size"]
    kv = c.get("num_key_value_heads", c["num_attention_heads"]) * c.get("head_dim", h // c["num_attention_heads"])
    sizes = {"q_proj": h * h, "k_proj": h * kv, "v_proj": h * kv, "o_proj": h * h,
             "gate_proj": h * ff, "up_proj": h * ff, "down_proj": h * ff}
    layers = c["num_hidden_layers"]
    total = 4 * (layers * sum(sizes.values()) + h * c["vocab_size"])
    return layers * sum(sizes[f.split(".")[-1]] for f in frozen) / total

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-bench-freeze")
    ap.add_argument("--model", default="assets/models/kjv-teacher-7m")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="docs/freeze-benchmark.md")
    args = ap.parse_args()
    result = json.loads(subprocess.run(
        [args.binary, "--model", args.model, "--iterations", str(args.iterations), "--micro-batch", str(args.micro_batch),
         "--seq-len", str(args.seq_len), "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout)
    none = next(s for s in result["settings"] if s["name"] == "none")

    def paired(s, key):
        """Median over iterations of this setting's time / the same iteration's `none` time, minus 1."""
        return statistics.median(a / b for a, b in zip(s[key], none[key])) - 1

    lines = [
        "# Step time with frozen projections",
        "",
        f"Measured by `python3 scripts/bench_freeze.py --iterations {args.iterations} --micro-batch {args.micro_batch} "
        f"--seq-len {args.seq_len}` on {os.cpu_count()} CPU cores: `{args.model}`, W4 per channel, fp32, one fixed "
        f"{args.micro_batch}x{args.seq_len} batch. A step is teacher forward, student forward, KD loss and backward "
        f"(no optimizer). Each of {args.iterations} iterations times one step of every setting back to back, in rotating "
        "order. \"vs none\" is the median over iterations of the time divided by the same iteration's `none` time, "
        "which cancels the machine's drift; \"fastest\" compares the fastest of the iterations, the least disturbed "
        "by other load. \"Removed work\" is the share of the step's linear-layer multiply-adds that the frozen "
        "projections' weight gradients account for, counted from the model config.",
        "",
        "| frozen | trainable params | median step s | step vs none | fastest step vs none | backward vs none | fastest backward vs none | removed work |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["settings"]:
        lines.append(f"| {s['name']} | {s['trainable_params']:,} | {statistics.median(s['step_s']):.4f} | "
                     f"{100 * paired(s, 'step_s'):+.1f}% | {100 * (min(s['step_s']) / min(none['step_s']) - 1):+.1f}% | "
                     f"{100 * paired(s, 'backward_s'):+.1f}% | {100 * (min(s['backward_s']) / min(none['backward_s']) - 1):+.1f}% | "
                     f"{100 * removed_share(s['frozen'], args.model):.1f}% |")
    lines.append("")
    write_keeping_reading(args.out, "\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
