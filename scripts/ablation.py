#!/usr/bin/env python3
"""Freeze ablation on the shipped teacher: none / ov / o-only / v-only / qkv / auto at two learning rates.

The recipe follows tests/fixtures/reference/hf-ablation.json (W4 per channel, dynamic min-max scales, STE,
forward KL, AdamW without weight decay, cosine decay to 0, no warm-up, no clipping, random windows of
kjv-train.u16) with fewer tokens per step when run on a CPU (say so in the output). For every run:
validation perplexity, cloze accuracy, peak and final KL (KL measured on the training batch every
`--kl-every` steps), stability events, mean step time. Writes docs/ablation.md and
<runs-dir>/report.html (qkd-train report over all runs, not kept in the repository).
  python3 scripts/ablation.py [--steps 300 --micro-batch 32 --seq-len 256]   # the reference recipe (GPU)
  python3 scripts/ablation.py --steps 40 --micro-batch 4 --seq-len 256 --mc-limit 250 --sweep auto-r0,auto-r0.1,auto-r0.5  # CPU
"""
import argparse, json, os, shutil, subprocess, statistics

from doc_output import write_keeping_reading

POLICIES = {
    "none": {"policy": "none"},
    "ov": {"policy": "ov"},
    "o": {"policy": "modules", "modules": ["o_proj"]},
    "v": {"policy": "modules", "modules": ["v_proj"]},
    "qkv": {"policy": "modules", "modules": ["q_proj", "k_proj", "v_proj"]},
    "auto": {"policy": "auto", "scope": "all"},  # rollback, release at 0.25 x the learning rate at the freeze
}
HF = {  # tests/fixtures/reference/hf-ablation.json (policy, lr) -> (peak KL, final KL, val ppl)
    ("none", 1e-3): (0.133, 0.0181, 28.84), ("ov", 1e-3): (0.083, 0.0142, 28.96), ("o", 1e-3): (0.119, 0.0162, 28.86),
    ("v", 1e-3): (0.106, 0.0157, 28.88), ("qkv", 1e-3): (0.092, 0.0150, 29.00), ("none", 1e-4): (0.032, 0.0099, 29.25),
    ("ov", 1e-4): (0.032, 0.0093, 29.34),
}

def freeze_section(policy):
    """A POLICIES entry, or "auto-r<F>[-w<N>]": auto releasing at F x the learning rate at the freeze,
    with the released projections' learning rate ramped over N updates (a sweep)."""
    if policy.startswith("auto-r"):
        factor, _, warmup = policy[len("auto-r"):].partition("-w")
        return {"policy": "auto", "scope": "all", "release_lr_factor": float(factor), "release_warmup_steps": int(warmup or 0)}
    return POLICIES[policy]

def run(args, policy, lr):
    run_dir = os.path.join(args.runs_dir, f"{policy}-lr{lr:g}")
    summary_path = os.path.join(run_dir, "summary.json")
    reuse = args.reuse and os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
    if not reuse:
        shutil.rmtree(run_dir, ignore_errors=True)
    config = {
        "run_dir": run_dir, "label": f"{policy} lr {lr:g}",
        "teacher": {"path": "assets/models/kjv-teacher-7m", "dtype": args.teacher_dtype},
        "quant": {"bits": args.bits, "granularity": "per_channel"},
        "data": {"sources": [{"path": "assets/data/kjv/kjv-train.u16"}], "seq_len": args.seq_len, "seed": 5},
        "kd": {"divergence": "forward_kl"},
        "optim": {"lr": lr, "schedule": "cosine", "weight_decay": 0.0, "grad_clip": 0.0},
        "train": {"steps": args.steps, "micro_batch": args.micro_batch, "log_interval": 1, "device": args.device,
                  "threads": args.threads},
        "eval": {"ppl": ["assets/data/kjv/kjv-val.u16"], "mc": ["assets/data/kjv/kjv-cloze-val.jsonl"],
                 "seq_len": 256, "batch_size": 16, "at_start": False, "mc_limit": args.mc_limit},
        "freeze": freeze_section(policy),
        "monitor": {"interval": args.monitor_interval, "spike_factor": args.spike_factor},
        "checkpoint": {"resume": "never"},
        "export": {"hf": False},
    }
    os.makedirs(args.runs_dir, exist_ok=True)
    path = run_dir + ".json"
    if not reuse:
        json.dump(config, open(path, "w"), indent=2)
        subprocess.run([args.binary, "--config", path], check=True, stderr=subprocess.DEVNULL)
    summary = json.load(open(summary_path))
    wall = summary["wall_seconds"]
    metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    train = [m for m in metrics if m["type"] == "train"]
    kl = [m["kd"] for m in train]
    kl_every = [m["kd"] for m in train if (m["step"] - 1) % args.kl_every == 0]
    events = [json.loads(l) for l in open(os.path.join(run_dir, "events.jsonl"))]
    ev = summary["final_eval"]
    return {
        "policy": policy, "lr": lr, "ppl": ev["ppl"]["kjv-val.u16"],
        "acc": ev["mc"]["kjv-cloze-val.jsonl"]["acc"], "acc_norm": ev["mc"]["kjv-cloze-val.jsonl"]["acc_norm"],
        "kl_peak": max(kl_every), "kl_max": max(kl), "kl_final": statistics.mean(kl[-args.kl_every:]),
        "spikes": sum(e["kind"] == "spike" for e in events),
        "freezes": [e["step"] for e in events if e["kind"] == "freeze"],
        "releases": [e["step"] for e in events if e["kind"] == "release"],
        "step_s": statistics.median(m["step_seconds"] for m in train), "wall": wall, "run_dir": run_dir,
    }

def freeze_steps(r):
    if not r["policy"].startswith("auto") and r["policy"] != "none":
        return "0 (static)"
    text = ",".join(map(str, r["freezes"])) or "-"
    return text + (" (released " + ",".join(map(str, r["releases"])) + ")" if r["releases"] else "")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--lrs", default="1e-3,1e-4")
    ap.add_argument("--policies", default="none,ov,o,v,qkv,auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--teacher-dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--monitor-interval", type=int, default=1)
    ap.add_argument("--spike-factor", type=float, default=3.0)
    ap.add_argument("--sweep", default="", help="extra policies run at the first learning rate only, e.g. auto-r0.1,auto-r0.5")
    ap.add_argument("--kl-every", type=int, default=10)
    ap.add_argument("--mc-limit", type=int, default=0, help="cloze items scored per run (0: all 1,000)")
    ap.add_argument("--runs-dir", default="runs/ablation")
    ap.add_argument("--out", default="docs/ablation.md")
    ap.add_argument("--reuse", action="store_true", help="take finished runs from --runs-dir instead of rerunning them")
    args = ap.parse_args()
    results = []
    lrs = [float(x) for x in args.lrs.split(",")]
    policies = args.policies.split(",")
    sweep = [(lrs[0], p) for p in args.sweep.split(",") if p]
    plan = [(lrs[0], p) for p in policies] + sweep + [(lr, p) for lr in lrs[1:] for p in policies]
    for lr, policy in plan:
        results.append(run(args, policy, lr))
        r = results[-1]
        print(f"{policy:5s} lr {lr:g}: ppl {r['ppl']:.3f} peak KL {r['kl_peak']:.4f} final KL {r['kl_final']:.4f} "
              f"freezes {r['freezes']} step {r['step_s']:.3f}s", flush=True)
    # Generated reports stay out of the repository: they go beside the runs they show.
    report = os.path.join(args.runs_dir, "report.html")
    subprocess.run([args.binary, "report", "--title", "qkd-train freeze ablation", "--out", report] +
                   sum((["--run", r["run_dir"]] for r in results), []), check=True)
    screenshot = os.path.join(args.runs_dir, "report.png")
    if shutil.which("chromium"):  # proof that the report renders in a headless browser
        import tempfile
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                            f"--screenshot={os.path.abspath(screenshot)}", "--window-size=1400,4000",
                            "file://" + os.path.abspath(report)], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tokens = args.micro_batch * args.seq_len
    lines = [
        "# Freeze ablation on kjv-teacher-7m",
        "",
        f"Measured by `python3 scripts/ablation.py --steps {args.steps} --micro-batch {args.micro_batch} "
        f"--seq-len {args.seq_len} --bits {args.bits} --mc-limit {args.mc_limit}"
        + (f" --sweep {args.sweep}" if args.sweep else "") + f"` on {args.device} ({os.cpu_count()} cores): "
        f"{args.steps} steps of {args.micro_batch}x{args.seq_len} = {tokens} tokens per step"
        + ("" if tokens == 32 * 256 and args.steps == 300 else
           f" (the reference recipe uses 300 steps of 32x256 = 8192 tokens; this run has {tokens / 8192:.3g}x the tokens per step)")
        + ". Peak KL is the largest KL over steps 1, 1+k, 1+2k, ... (k = 10, as the reference samples it), max KL the largest over "
        "every step, final KL the mean of the last 10 steps. "
        "The HF columns are `tests/fixtures/reference/hf-ablation.json` (300 x 32x256 on a GPU).",
        "",
        "| frozen | lr | val ppl | HF ppl | cloze acc / acc_norm | peak KL | HF peak KL | max KL | final KL | HF final KL | spike events | freeze at step | median step s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        hf = HF.get((r["policy"], r["lr"]))
        hf_cols = [f"{hf[2]:.2f}", f"{hf[0]:.3f}", f"{hf[1]:.4f}"] if hf else ["-", "-", "-"]
        lines.append(f"| {r['policy']} | {r['lr']:g} | {r['ppl']:.3f} | {hf_cols[0]} | {r['acc']:.3f} / {r['acc_norm']:.3f} | "
                     f"{r['kl_peak']:.4f} | {hf_cols[1]} | {r['kl_max']:.4f} | {r['kl_final']:.4f} | {hf_cols[2]} | {r['spikes']} | "
                     f"{freeze_steps(r)} | {r['step_s']:.3f} |")
    lines += ["", f"Report: `{report}` (written by the command above, not kept in the repository)" +
              (f"; headless Chromium screenshot: `{screenshot}`." if os.path.exists(screenshot) else "."), ""]
    write_keeping_reading(args.out, "\n".join(lines))
    json.dump(results, open(os.path.splitext(args.out)[0] + ".json", "w"), indent=1)
    print("\n".join(lines))

if __name__ == "__main__":
    main()
