#!/usr/bin/env python3
"""Step time with frozen projections: does a freeze really skip the weight-gradient compute?

Trains the shipped teacher (W4 per channel, monitor off, no eval, no export) under several freeze
policies, interleaved over --repeats rounds so machine drift hits every policy alike. Per run: median
step seconds over the steps after --warmup; per policy: the median over the rounds, the spread of the
rounds, and the change against `none`. Next to it the share of the step's matmul work that the freeze
removes, counted from the model config (the weight-gradient matmul of each frozen projection).
Writes docs/freeze-benchmark.md.
  python3 scripts/bench_freeze.py [--steps 20 --micro-batch 8 --repeats 5]
"""
import argparse, json, os, shutil, statistics, subprocess

POLICIES = {
    "none": {"policy": "none"},
    "ov": {"policy": "ov"},
    "qkv": {"policy": "modules", "modules": ["q_proj", "k_proj", "v_proj"]},
    "attention": {"policy": "modules", "modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "all": {"policy": "modules", "modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
}
FROZEN = {"none": [], "ov": ["v", "o"], "qkv": ["q", "k", "v"], "attention": ["q", "k", "v", "o"],
          "all": ["q", "k", "v", "o", "gate", "up", "down"]}

def projection_sizes(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    h, ff = c["hidden_size"], c["intermediate_size"]
    kv = c.get("num_key_value_heads", c["num_attention_heads"]) * c.get("head_dim", h // c["num_attention_heads"])
    per_layer = {"q": h * h, "k": h * kv, "v": h * kv, "o": h * h, "gate": h * ff, "up": h * ff, "down": h * ff}
    return per_layer, c["num_hidden_layers"], h * c["vocab_size"]

def removed_share(policy, model_dir):
    """Weight-gradient multiply-adds removed, as a share of the step's linear-layer multiply-adds: teacher
    forward + student forward + student input gradients (all projections and lm_head) + student weight
    gradients (projections only; embeddings and lm_head are not trained)."""
    per_layer, layers, head = projection_sizes(model_dir)
    projections = layers * sum(per_layer.values())
    total = 3 * (projections + head) + projections
    return layers * sum(per_layer[p] for p in FROZEN[policy]) / total

def run_once(args, policy, round_index):
    run_dir = os.path.join(args.runs_dir, f"{policy}-{round_index}")
    shutil.rmtree(run_dir, ignore_errors=True)
    config = {
        "run_dir": run_dir,
        "teacher": {"path": args.model, "dtype": "float32"},
        "quant": {"bits": 4, "granularity": "per_channel"},
        "data": {"sources": [{"path": "assets/data/kjv/kjv-train.u16"}], "seq_len": args.seq_len, "seed": 5},
        "optim": {"lr": 1e-4},
        "train": {"steps": args.steps, "micro_batch": args.micro_batch, "log_interval": 1, "threads": args.threads},
        "freeze": POLICIES[policy],
        "monitor": {"enabled": False},
        "checkpoint": {"resume": "never"},
        "export": {"hf": False},
    }
    os.makedirs(args.runs_dir, exist_ok=True)
    path = run_dir + ".json"
    json.dump(config, open(path, "w"), indent=2)
    subprocess.run([args.binary, "--config", path], check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    train = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    times = [m["step_seconds"] for m in train if m["type"] == "train" and m["step"] > args.warmup]
    trainable = [m["trainable_params"] for m in train if m["type"] == "train"][-1]
    shutil.rmtree(run_dir, ignore_errors=True)  # a few MB of checkpoints per run
    os.remove(path)
    return statistics.median(times), trainable

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--model", default="assets/models/kjv-teacher-7m")
    ap.add_argument("--policies", default="none,ov,qkv,attention,all")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the median (allocator and cache warm-up)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs-dir", default="runs/bench-freeze")
    ap.add_argument("--out", default="docs/freeze-benchmark.md")
    args = ap.parse_args()
    policies = args.policies.split(",")
    medians = {p: [] for p in policies}
    trainable = {}
    for r in range(args.repeats):
        for p in policies:
            seconds, trainable[p] = run_once(args, p, r)
            medians[p].append(seconds)
            print(f"round {r + 1}/{args.repeats} {p:9s} median step {seconds:.4f} s", flush=True)
    base = statistics.median(medians["none"]) if "none" in medians else None
    lines = [
        "# Step time with frozen projections",
        "",
        f"Measured by `python3 scripts/bench_freeze.py --steps {args.steps} --micro-batch {args.micro_batch} "
        f"--seq-len {args.seq_len} --repeats {args.repeats}` on {os.cpu_count()} CPU cores: `{args.model}`, W4 per channel, "
        f"fp32, monitor off, {args.micro_batch}x{args.seq_len} tokens per step. Each policy ran {args.repeats} times, "
        "interleaved with the others; a run's step time is its median over the steps after the first "
        f"{args.warmup}, the table shows the median over the runs and their range. \"Removed work\" is the share of the step's "
        "linear-layer multiply-adds (teacher forward, student forward, input and weight gradients) that the "
        "frozen projections' weight gradients account for, counted from the model config.",
        "",
        "| frozen | trainable params | median step s | range over runs | vs none | removed work |",
        "|---|---|---|---|---|---|",
    ]
    for p in policies:
        m = statistics.median(medians[p])
        change = f"{100 * (m / base - 1):+.1f}%" if base else "-"
        lines.append(f"| {p} | {trainable[p]:,} | {m:.4f} | {min(medians[p]):.4f}-{max(medians[p]):.4f} | {change} | "
                     f"{100 * removed_share(p, args.model):.1f}% |")
    lines.append("")
    open(args.out, "w").write("\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
