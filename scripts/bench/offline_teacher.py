#!/usr/bin/env python3
"""The offline teacher against the online one on the main job (configs/tiny-kjv.json).

For each k: `qkd-train cache-teacher --top-k k` builds the cache (timed; disk bytes per token = the shard
files' bytes / cached tokens), then the main job trains from it (kd.teacher=cache). The online run is the
main job as shipped. Every run's summary.json gives tokens/s, the final validation perplexity on
kjv-val.u16 and the cloze accuracy; metrics.jsonl the per-step throughput and the teacher phase.

  python3 scripts/bench/offline_teacher.py [--binary build/qkd-train] [--ks 8,32,128] [--set a.b=v ...] [--reuse]
                                           [--out FILE]

--set applies to every command, e.g. train.threads=1 on a machine others load too (two OpenMP threads
on two oversubscribed cores spin at their barriers and run many times slower).

scripts/bench/run_bench.py imports measure() and puts the section it returns into docs/PERFORMANCE.md.
Python standard library only. Runs go to runs/bench-offline-teacher/ (each one started afresh).
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/tiny-kjv.json"
WORK = "runs/bench-offline-teacher"
PPL_FILE = "kjv-val.u16"
MC_FILE = "kjv-cloze-val.jsonl"


def _run(cmd):
    """Runs `cmd` in the repository root (the config's paths are relative to it); returns wall seconds."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    start = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def _shown(binary):
    """The binary as the commands show it: relative to the repository root when it is inside it."""
    path = Path(binary)
    return str(path.relative_to(ROOT)) if ROOT in path.parents else binary


def _finished(run_dir):
    summary = ROOT / run_dir / "summary.json"
    return summary.exists() and not json.loads(summary.read_text())["interrupted"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _train(binary, run_dir, overrides, reuse):
    """Runs the main job into `run_dir` afresh (reuse: keeps a finished run there)."""
    cmd = [binary, "--config", CONFIG, "--set", f"run_dir={run_dir}"] + _sets(overrides)
    if not (reuse and _finished(run_dir)):
        shutil.rmtree(ROOT / run_dir, ignore_errors=True)
        _run(cmd)
    return cmd


def _build_cache(binary, cache_dir, k, overrides, reuse):
    """Builds the cache afresh and times it (reuse: keeps a complete cache and its recorded time)."""
    cmd = [binary, "cache-teacher", "--config", CONFIG, "--out", cache_dir, "--top-k", str(k)] + _sets(overrides)
    record = ROOT / f"{cache_dir}.build.json"
    if not (reuse and record.exists()):
        shutil.rmtree(ROOT / cache_dir, ignore_errors=True)
        record.write_text(json.dumps({"seconds": _run(cmd)}))
    manifest = json.loads((ROOT / cache_dir / "manifest.json").read_text())
    return {"cmd": cmd, "seconds": json.loads(record.read_text())["seconds"],
            "bytes_per_token": manifest["shard_bytes"] / manifest["tokens"]}


def _results(run_dir):
    """Throughput and quality of a finished run, from its summary.json and metrics.jsonl."""
    summary = json.loads((ROOT / run_dir / "summary.json").read_text())
    if summary["interrupted"]:
        raise RuntimeError(f"{run_dir}: the run was interrupted")
    records = [json.loads(line) for line in (ROOT / run_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in records if r.get("type") == "train" and r.get("step", 0) > 1]  # step 1 warms up
    evaluation = summary["final_eval"]
    return {
        "tokens_per_second": summary["tokens_per_second"],
        "step_tokens_per_second": statistics.median(r["tokens_per_s"] for r in steps) if steps else float("nan"),
        "teacher_seconds": statistics.median(r["phases"]["teacher_forward"] for r in steps)
        if steps and all("phases" in r for r in steps) else float("nan"),
        "ppl": evaluation["ppl"][PPL_FILE],
        "cloze": evaluation["mc"][MC_FILE]["acc"],
    }


def _row(source, k, cache, result, online_ppl):
    build = f"{cache['seconds']:.1f}" if cache else "-"
    per_token = f"{cache['bytes_per_token']:.1f}" if cache else "-"
    delta = f"{result['ppl'] - online_ppl:+.3f}" if cache else "-"
    return (f"| {source} | {k} | {build} | {per_token} | {result['tokens_per_second']:.0f} | "
            f"{result['step_tokens_per_second']:.0f} | {result['teacher_seconds']:.3g} | {result['ppl']:.3f} | "
            f"{delta} | {result['cloze']:.3f} |")


def measure(binary: str, ks=(8, 32, 128), overrides=(), reuse=False) -> str:
    """Runs the online main job and, for each k, cache-teacher plus the main job from the cache; returns
    the markdown section "## Offline teacher". `overrides` ("a.b=value") apply to every command; `reuse`
    keeps the finished runs and caches of an earlier call (delete one to measure it again)."""
    overrides = list(overrides)
    binary = str(Path(binary).resolve())
    load_before = os.getloadavg()[0]
    online_dir = f"{WORK}/online"
    online_cmd = _train(binary, online_dir, overrides, reuse)
    online = _results(online_dir)
    rows = [_row("online", "-", None, online, online["ppl"])]
    commands = [online_cmd]
    for k in ks:
        cache_dir = f"{WORK}/cache-k{k}"
        cache = _build_cache(binary, cache_dir, k, overrides, reuse)
        run_dir = f"{WORK}/from-cache-k{k}"
        from_cache = overrides + ["kd.teacher=cache", f"kd.teacher_cache={cache_dir}"]
        commands += [cache["cmd"], _train(binary, run_dir, from_cache, reuse)]
        rows.append(_row("cache", k, cache, _results(run_dir), online["ppl"]))
        print(rows[-1], file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    config = json.loads((ROOT / CONFIG).read_text())
    train, quant = config["train"], config.get("quant", {})
    shape = f"{train['steps']} steps x {train['micro_batch'] * train.get('grad_accum', 1)} x {config['data']['seq_len']} tokens"
    rerun = " ".join(["python3 scripts/bench/offline_teacher.py"] + [f"--set {o}" for o in overrides])
    return "\n".join([
        "## Offline teacher",
        "",
        f"The main job (`{CONFIG}`: {shape}, W{quant.get('bits', 4)}) with the teacher run online beside "
        "the student, and trained from its top-k log-probabilities cached by `qkd-train cache-teacher` "
        "(`kd.teacher: cache`, `docs/offline-teacher.md`). Cache build: wall seconds of the command (teacher loading "
        "included); disk bytes/token: the shard files over the cached tokens. Train tokens/s: summary.json (training "
        "tokens over the whole run, evaluations and export included); step tokens/s and teacher s/step: medians over "
        "the logged steps of metrics.jsonl (teacher s/step is the teacher forward online, the cache read offline). "
        f"Val ppl on {PPL_FILE} and cloze accuracy on {MC_FILE} after the last step. "
        f"{os.cpu_count()} CPU cores, load average {load_before:.1f} at the start and {load_after:.1f} at the end"
        + (f"; every command with `--set {' --set '.join(overrides)}`." if overrides else "."),
        "",
        "| teacher source | k | cache build s | disk bytes/token | train tokens/s | step tokens/s | teacher s/step | "
        "val ppl | Δppl vs online | cloze acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Commands (from the repository root; `{rerun}` runs them all):",
        "",
        "```",
        *(" ".join(shlex.quote(_shown(c) if c == binary else c) for c in cmd) for cmd in commands),
        "```",
        "",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="build/qkd-train")
    parser.add_argument("--ks", default="8,32,128", help="comma-separated k values")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a.b=value for every command")
    parser.add_argument("--reuse", action="store_true", help="keep the finished runs and caches of an earlier call")
    parser.add_argument("--out", help="also write the section to this file")
    args = parser.parse_args()
    section = measure(args.binary, tuple(int(k) for k in args.ks.split(",")), args.overrides, args.reuse)
    if args.out:
        Path(args.out).write_text(section)
    print(section)


if __name__ == "__main__":
    main()
