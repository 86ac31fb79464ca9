#!/usr/bin/env python3
"""Freeze ablation on the shipped teacher: none / ov / o-only / v-only / qkv / auto at two learning rates,
each over one or more data seeds.

The recipe follows tests/fixtures/reference/hf-ablation.json (W4 per channel, dynamic min-max scales, STE,
forward KL, AdamW without weight decay, cosine decay to 0, no warm-up, no clipping, random windows of
kjv-train.u16) with fewer tokens per step when run on a CPU (say so in the output). For every run:
validation perplexity, cloze accuracy, peak, max and final KL (KL measured on the training batch every
step), stability events, mean step time; per policy the mean and spread over the seeds. Writes --out
(docs/ablation.md), its .json, and <runs-dir>/report.html (qkd-train report over all runs, not kept in the
repository).
  python3 scripts/ablation.py [--steps 300 --micro-batch 32 --seq-len 256]   # the reference recipe
  python3 scripts/ablation.py --steps 120 --micro-batch 8 --seq-len 256 --mc-limit 250 --lrs 1e-3 \
      --policies none,ov,auto --seeds 5,6,7 --out docs/ablation-long.md   # CPU, three data seeds
"""
import argparse, json, os, shutil, subprocess, statistics
from concurrent.futures import ThreadPoolExecutor

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

VARIANT_KEYS = {  # "auto-<letter><value>-..." sets one freeze key per part
    "r": ("release_lr_factor", float), "w": ("release_warmup_steps", int), "c": ("release_calm_steps", int),
    "a": ("analysis_batches", int), "f": ("analysis_factor", float),
}

def freeze_section(policy):
    """A POLICIES entry, or a variant of auto (a sweep): "auto-r0.5-w20" releases at 0.5 x the learning
    rate at the freeze with a 20-update ramp, "auto-a0" has no analysis before the first update,
    "auto-c5" waits for 5 calm steps, "auto-f3" takes outliers above 3x the median (VARIANT_KEYS)."""
    if policy in POLICIES:
        return POLICIES[policy]
    if not policy.startswith("auto-"):
        raise SystemExit(f"unknown policy {policy!r}: one of {', '.join(POLICIES)} or auto-<variant>")
    section = dict(POLICIES["auto"])
    for part in policy[len("auto-"):].split("-"):
        if part[:1] not in VARIANT_KEYS:
            raise SystemExit(f"{policy}: unknown variant part {part!r} (expected one of {', '.join(VARIANT_KEYS)})")
        key, kind = VARIANT_KEYS[part[0]]
        section[key] = kind(part[1:])
    return section

def run(args, policy, lr, seed):
    run_dir = os.path.join(args.runs_dir, f"{policy}-lr{lr:g}-s{seed}")
    summary_path = os.path.join(run_dir, "summary.json")
    reuse = args.reuse and os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
    if not reuse:
        shutil.rmtree(run_dir, ignore_errors=True)
    config = {
        "run_dir": run_dir, "label": f"{policy} lr {lr:g} seed {seed}",
        "teacher": {"path": "assets/models/kjv-teacher-7m", "dtype": args.teacher_dtype},
        "quant": {"bits": args.bits, "granularity": "per_channel"},
        "data": {"sources": [{"path": "assets/data/kjv/kjv-train.u16"}], "seq_len": args.seq_len, "seed": seed},
        "kd": {"divergence": "forward_kl"},
        "optim": {"lr": lr, "schedule": "cosine", "weight_decay": 0.0, "grad_clip": 0.0},
        "train": {"steps": args.steps, "micro_batch": args.micro_batch, "log_interval": 1, "device": args.device,
                  "threads": args.threads},
        "eval": {"ppl": ["assets/data/kjv/kjv-val.u16"], "mc": ["assets/data/kjv/kjv-cloze-val.jsonl"],
                 "seq_len": 256, "batch_size": 16, "at_start": False, "mc_limit": args.mc_limit},
        "freeze": freeze_section(policy),
        "monitor": {"interval": args.monitor_interval, "spike_factor": args.spike_factor},
        "checkpoint": {"resume": "never"},
        "export": {"formats": []},
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
        "policy": policy, "lr": lr, "seed": seed, "ppl": ev["ppl"]["kjv-val.u16"],
        "acc": ev["mc"]["kjv-cloze-val.jsonl"]["acc"], "acc_norm": ev["mc"]["kjv-cloze-val.jsonl"]["acc_norm"],
        "kl_peak": max(kl_every), "kl_max": max(kl), "kl_final": statistics.mean(kl[-args.kl_every:]),
        "spikes": sum(e["kind"] == "spike" for e in events),
        "freezes": [e["step"] for e in events if e["kind"] == "freeze"],
        "analysis_frozen": sorted({m.rsplit(".", 1)[-1] for e in events if e["kind"] == "analysis" for m in e["modules"]}),
        "releases": [e["step"] for e in events if e["kind"] == "release"],
        "step_s": statistics.median(m["step_seconds"] for m in train), "wall": wall, "run_dir": run_dir,
    }

def freeze_steps(r):
    if not r["policy"].startswith("auto") and r["policy"] != "none":
        return "0 (static)"
    text = ",".join(map(str, r["freezes"])) or "-"
    return text + (" (released " + ",".join(map(str, r["releases"])) + ")" if r["releases"] else "")

def spread(values, digits):
    """mean ± sample standard deviation (min-max) over the seeds; the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")

def groups(results):
    """(policy, lr) -> its runs over the seeds, in the order first run."""
    out = {}
    for r in results:
        out.setdefault((r["policy"], r["lr"]), []).append(r)
    return out

def summary_table(results, n_seeds):
    head = "mean ± sd (min-max) over the seeds" if n_seeds > 1 else "one seed"
    lines = [f"| policy | lr | seeds | val ppl ({head}) | HF ppl | cloze acc | peak KL | HF peak KL | max KL | final KL | "
             "analysis froze | freeze / release steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (policy, lr), runs in groups(results).items():
        hf = HF.get((policy, lr))
        col = lambda key, d: spread([r[key] for r in runs], d)
        lines.append(f"| {policy} | {lr:g} | {','.join(str(r['seed']) for r in runs)} | {col('ppl', 3)} | {f'{hf[2]:.2f}' if hf else '-'} | {col('acc', 3)} | "
                     f"{col('kl_peak', 4)} | {f'{hf[0]:.3f}' if hf else '-'} | {col('kl_max', 4)} | {col('kl_final', 4)} | "
                     f"{','.join(runs[0]['analysis_frozen']) or '-'} | {'; '.join(freeze_steps(r) for r in runs)} |")
    return lines

def per_run_table(results):
    lines = ["Every run:", "",
             "| policy | lr | seed | val ppl | cloze acc / acc_norm | peak KL | max KL | final KL | spike events | "
             "freeze at step | median step s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['policy']} | {r['lr']:g} | {r['seed']} | {r['ppl']:.3f} | {r['acc']:.3f} / {r['acc_norm']:.3f} | "
                     f"{r['kl_peak']:.4f} | {r['kl_max']:.4f} | {r['kl_final']:.4f} | {r['spikes']} | {freeze_steps(r)} | "
                     f"{r['step_s']:.3f} |")
    return lines

def bar_lines(results):
    """Issue #29's bar for every auto variant: its max KL no higher than ov's, its val ppl no higher than
    the lower of none's and ov's, as means over the seeds the variant ran on (none and ov on the same
    seeds)."""
    g = groups(results)
    lines = []
    for lr in sorted({lr for _, lr in g}, reverse=True):
        if ("none", lr) not in g or ("ov", lr) not in g:
            continue
        for policy, l in g:
            if l != lr or not policy.startswith("auto"):
                continue
            seeds = {r["seed"] for r in g[(policy, lr)]}
            if not all(seeds <= {r["seed"] for r in g[(p, lr)]} for p in ("none", "ov")):
                continue
            mean = lambda p, key: statistics.mean(r[key] for r in g[(p, lr)] if r["seed"] in seeds)
            best_ppl = min(mean("none", "ppl"), mean("ov", "ppl"))
            kl, ppl, ov_kl = mean(policy, "kl_max"), mean(policy, "ppl"), mean("ov", "kl_max")
            lines.append(f"- {policy} at lr {lr:g}, seed{'s' if len(seeds) > 1 else ''} "
                         f"{', '.join(map(str, sorted(seeds)))}: mean max KL {kl:.4f} vs ov's {ov_kl:.4f} "
                         f"({'met' if kl <= ov_kl else 'missed'}, {kl - ov_kl:+.4f}); mean val ppl {ppl:.3f} vs "
                         f"{best_ppl:.3f}, the lower of none's and ov's ({'met' if ppl <= best_ppl else 'missed'}, "
                         f"{ppl - best_ppl:+.3f}).")
    return (["Bar (issue #29: auto's max KL no higher than ov's, its val ppl no higher than the lower of none's "
             "and ov's; means over the seeds the variant ran on, none and ov on the same seeds):", ""] + lines) if lines else []

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
    ap.add_argument("--seeds", default="5", help="data seeds (data.seed); every policy runs once per seed")
    ap.add_argument("--sweep-seeds", default="", help="data seeds of the --sweep variants that name none "
                    "(\"auto-r1-c5-w20@5+6\" names its own; default: --seeds)")
    ap.add_argument("--note", default="", help="a sentence added under the command line (the machine, say)")
    ap.add_argument("--reuse", action="store_true", help="take finished runs from --runs-dir instead of rerunning them")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with --threads threads); the tables keep "
                    "the order of the plan")
    args = ap.parse_args()
    lrs = [float(x) for x in args.lrs.split(",")]
    policies = args.policies.split(",")
    # A sweep variant may name its own seeds: "auto-r1-c5-w20@5+6".
    sweep_items = [item.partition("@") for item in args.sweep.split(",") if item]
    sweep = [(lrs[0], name) for name, _, _ in sweep_items]
    own_seeds = {name: [int(x) for x in seeds.split("+")] for name, _, seeds in sweep_items if seeds}
    plan = [(lrs[0], p) for p in policies] + sweep + [(lr, p) for lr in lrs[1:] for p in policies]
    seeds = [int(x) for x in args.seeds.split(",")]
    sweep_seeds = [int(x) for x in args.sweep_seeds.split(",")] if args.sweep_seeds else seeds
    all_seeds = seeds + [s for s in sweep_seeds + sum(own_seeds.values(), []) if s not in seeds]
    todo = [(policy, lr, seed) for seed in sorted(set(all_seeds), key=all_seeds.index) for lr, policy in plan
            # the sweep variants run on --sweep-seeds (or their own), the policies on --seeds
            if seed in (own_seeds.get(policy, sweep_seeds) if (lr, policy) in sweep else seeds)]

    def run_and_print(item):
        policy, lr, seed = item
        r = run(args, policy, lr, seed)
        print(f"{policy:5s} lr {lr:g} seed {seed}: ppl {r['ppl']:.3f} peak KL {r['kl_peak']:.4f} max KL {r['kl_max']:.4f} "
              f"final KL {r['kl_final']:.4f} freezes {r['freezes']} releases {r['releases']} step {r['step_s']:.3f}s",
              flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run_and_print, todo))
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
    command = (f"python3 scripts/ablation.py --steps {args.steps} --micro-batch {args.micro_batch} --seq-len {args.seq_len} "
               f"--bits {args.bits} --mc-limit {args.mc_limit} --lrs {args.lrs} --policies {args.policies} --seeds {args.seeds}"
               + (f" --sweep {args.sweep}" if args.sweep else "")
               + (f" --sweep-seeds {args.sweep_seeds}" if args.sweep_seeds else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --spike-factor {args.spike_factor:g}" if args.spike_factor != 3.0 else "")
               + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
               + (f" --runs-dir {args.runs_dir}" if args.runs_dir != "runs/ablation" else "") + (f" --out {args.out}" if args.out != "docs/ablation.md" else ""))
    lines = [
        "# Freeze ablation on kjv-teacher-7m",
        "",
        f"Measured by `{command}` on {args.device} ({os.cpu_count()} cores): "
        f"{args.steps} steps of {args.micro_batch}x{args.seq_len} = {tokens} tokens per step"
        + ("" if tokens == 32 * 256 and args.steps == 300 else
           f" (the reference recipe uses 300 steps of 32x256 = 8192 tokens; this run has {tokens / 8192:.3g}x the tokens per step)")
        + f", data seeds {', '.join(map(str, seeds))}. "
        "Peak KL is the largest KL over steps 1, 1+k, 1+2k, ... (k = 10, as the reference samples it), max KL the largest over "
        "every step, final KL the mean of the last 10 steps. "
        "The HF columns are `tests/fixtures/reference/hf-ablation.json` (300 x 32x256 on a GPU, one seed)."
        + (" " + args.note if args.note else ""),
        "",
    ] + summary_table(results, len(seeds)) + [""] + per_run_table(results) + [""] + bar_lines(results)
    lines += ["", f"Report: `{report}` (written by the command above, not kept in the repository)" +
              (f"; headless Chromium screenshot: `{screenshot}`." if os.path.exists(screenshot) else "."), ""]
    write_keeping_reading(args.out, "\n".join(lines))
    json.dump(results, open(os.path.splitext(args.out)[0] + ".json", "w"), indent=1)
    print("\n".join(lines))

if __name__ == "__main__":
    main()
