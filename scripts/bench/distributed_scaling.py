#!/usr/bin/env python3
"""1 rank vs 2 ranks of qkd-train on this machine: tokens/s and the share of a step spent communicating.

The main job (configs/tiny-kjv.json) with the same global batch both ways: one process of micro-batch 4,
and two ranks (Gloo over loopback, started as torchrun starts them: RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) of micro-batch 2, one thread each, alternately for --rounds rounds. Prints (and with
--out writes) the markdown table of docs/distributed.md: median tokens/s of rank 0's step records
(global tokens), the ratio, and the median communication phase (gradient all-reduce and step totals).

  python3 scripts/bench/distributed_scaling.py [--binary build/qkd-train] [--steps 12] [--rounds 2] [--out FILE]
"""
import argparse, datetime, json, os, platform, shutil, socket, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/tiny-kjv.json"
WORK = "runs/bench-distributed"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(binary, run_dir, micro_batch, steps):
    return [binary, "--config", CONFIG, "--set", f"run_dir={run_dir}", "--set", f"train.steps={steps}",
            "--set", f"train.micro_batch={micro_batch}", "--set", "train.threads=1", "--set", "train.log_interval=1",
            "--set", "eval.ppl=[]", "--set", "eval.mc=[]", "--set", "export.formats=[]", "--set", "monitor.enabled=false",
            "--set", "checkpoint.interval=0"]


def run(binary, world, steps, tag):
    run_dir = f"{WORK}/{tag}"
    shutil.rmtree(ROOT / run_dir, ignore_errors=True)
    cmd = command(binary, run_dir, 4 // world, steps)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    rows = [json.loads(l) for l in open(ROOT / run_dir / "metrics.jsonl") if '"type":"train"' in l][2:]  # warm-up
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "step_seconds": statistics.median(r["step_seconds"] for r in rows),
            "communication": statistics.median(r["phases"]["communication"] for r in rows), "cmd": cmd}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="build/qkd-train")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    binary = str(Path(a.binary).resolve())
    results = {1: [], 2: []}
    for r in range(a.rounds):
        for world in (1, 2):
            results[world].append(run(binary, world, a.steps, f"w{world}-r{r}"))
            print(world, results[world][-1]["tokens_per_s"], file=sys.stderr, flush=True)
    med = {w: statistics.median(x["tokens_per_s"] for x in results[w]) for w in results}
    comm = {w: statistics.median(x["communication"] for x in results[w]) for w in results}
    step = {w: statistics.median(x["step_seconds"] for x in results[w]) for w in results}
    lines = [
        "| ranks x threads | micro-batch per rank | tokens/s (median) | step s | communication s per step | share |",
        "|---|---|---|---|---|---|",
    ]
    for w in (1, 2):
        lines.append(f"| {w} x 1 | {4 // w} | {med[w]:.0f} | {step[w]:.2f} | {comm[w]:.3f} | {comm[w] / step[w]:.1%} |")
    lines += ["", f"2 ranks / 1 rank: **{med[2] / med[1]:.2f}x** tokens/s.", "",
              f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} cores), {a.rounds} rounds x "
              f"{a.steps} steps, the first 2 steps of each run left out; load average before/after: "
              f"{os.getloadavg()[0]:.2f}.", "", "Produced by", "",
              f"    python3 scripts/bench/distributed_scaling.py --steps {a.steps} --rounds {a.rounds}", "",
              "which runs, for 2 ranks (rank 1 the same with RANK=1; 1 rank: micro_batch 4, no variables):", "",
              "    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=<free port> OMP_NUM_THREADS=1 \\",
              "      " + " ".join(results[2][0]["cmd"]).replace(str(ROOT) + "/", "")]
    table = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
