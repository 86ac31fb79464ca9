#!/usr/bin/env python3
"""Training-step speed of qkd-train against the plain-PyTorch peer (scripts/bench/peer_step.py).

Runs qkd-train's step and the peer alternately on the same model (the shipped kjv-teacher-7m), shape
and thread count, several rounds, and writes docs/PERFORMANCE.md: tokens/s of each (min/median/max
over the measured steps of all rounds), the ratio, each program's step split into phases, model FLOPs
per token and the fraction of the machine's fp32 matmul rate (measured in the same run) the step reaches.
With --offline-teacher it adds the offline-teacher rows (scripts/bench/offline_teacher.py).

  python3 scripts/bench/run_bench.py [--binary build/qkd-train] [--rounds 5] [--steps 6] [--threads 2]

The peer needs PyTorch on the same libtorch (Debian 12: apt-get install python3-torch); it runs
under /usr/bin/python3 unless --python says otherwise.
"""
import argparse, datetime, json, os, platform, shutil, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = "assets/models/kjv-teacher-7m"
TOKENS = "assets/data/kjv/kjv-train.u16"
PHASES = ["teacher_forward", "student_forward", "loss", "backward", "gradients", "monitor", "optimizer", "data"]


def qkd_steps(binary, micro, accum, seq, steps, threads, run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = {"run_dir": run_dir, "train.steps": steps, "train.micro_batch": micro, "train.grad_accum": accum,
            "data.seq_len": seq, "train.threads": threads, "train.log_interval": 1, "monitor.enabled": "false",
            "eval.ppl": "[]", "eval.mc": "[]", "eval.baselines": "false", "checkpoint.interval": 0,
            "export.formats": "[]", "kd.kd_weight": 1.0, "kd.ce_weight": 0.0, "freeze.policy": "none"}
    cmd = [binary, "--config", "configs/tiny-kjv.json"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    rows = [json.loads(l) for l in open(os.path.join(ROOT, run_dir, "metrics.jsonl"))]
    shutil.rmtree(os.path.join(ROOT, run_dir), ignore_errors=True)
    return [r for r in rows if r.get("type") == "train" and r["step"] > 1]  # step 1 warms caches up


def peer_steps(python, micro, accum, seq, steps, threads):
    """The peer's measured steps, and the machine rates it measured after them in the same process."""
    cmd = [python, os.path.join(HERE, "peer_step.py"), "--model", MODEL, "--tokens", TOKENS, "--micro-batch",
           str(micro), "--grad-accum", str(accum), "--seq-len", str(seq), "--steps", str(steps), "--threads",
           str(threads), "--matmul-rate", "--attention-rates"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    rates = {k: v for r in rows if "step" not in r for k, v in r.items()}
    return [r for r in rows if r.get("step", 0) > 1], rates


def model_flops_per_token(seq):
    """Matmul FLOPs per trained token: teacher forward 2N, student forward 2N, student backward 4N over
    the N weights of the projections and lm_head, plus the attention products (full T x T scores, as
    computed) in the same 1 + 1 + 2 proportion."""
    c = json.load(open(os.path.join(ROOT, MODEL, "config.json")))
    d, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    heads, kv, hd = c["num_attention_heads"], c["num_key_value_heads"], c.get("head_dim", d // c["num_attention_heads"])
    n = layers * (d * heads * hd * 2 + d * kv * hd * 2 + 3 * d * inter) + d * vocab
    attention = layers * heads * 2 * 2 * seq * hd  # q k^T and p v per token, forward
    return 8 * n + 4 * attention


def stats(values):
    return min(values), statistics.median(values), max(values)


def phase_medians(rows):
    keys = [k for k in PHASES if k in rows[0]["phases"]]
    return {k: statistics.median(r["phases"][k] for r in rows) for k in keys}


def measure(args):
    results = []
    rate_samples = {}
    for shape in args.shapes.split(","):
        micro, seq = map(int, shape.split("x"))
        variants = [("qkd-train", micro, 1), ("peer", micro, 1)]
        for split in args.accum_splits.split(",") if args.accum_splits else []:
            m, a = map(int, split.split("*"))
            if m * a == micro and a > 1:
                variants += [("qkd-train", m, a), ("peer", m, a)]
        rows = {v: [] for v in variants}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for v in order:
                prog, m, a = v
                if prog == "qkd-train":
                    rows[v] += qkd_steps(args.binary, m, a, seq, args.steps, args.threads, "runs/bench-step")
                else:
                    got, rates = peer_steps(args.python, m, a, seq, args.steps, args.threads)
                    rows[v] += got
                    for k, value in rates.items():
                        rate_samples.setdefault(k, []).append(value)
                print(f"  {shape} round {r + 1}: {prog} {m}x{a} done", file=sys.stderr)
        results.append((shape, seq, rows))
    return results, {k: statistics.median(v) for k, v in rate_samples.items()}


def render(results, rates, args):
    rate = rates["matmul_flops_per_s"]
    lines = ["# Training-step speed", "",
             "qkd-train's training step against the same step written in plain PyTorch "
             "(`scripts/bench/peer_step.py`: functional LLaMA, explicit matmul/softmax attention, per-channel int4 "
             "straight-through fake-quant recomputed every forward, full-vocabulary log-softmax forward KL, "
             "`AdamW(foreach=True)`, `set_flush_denormal(True)`), on the shipped kjv-teacher-7m in fp32, W4 per "
             "channel, forward KL only, monitor off. Both programs use the same Debian libtorch 1.13 and OpenBLAS "
             f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), {args.threads} threads, and run "
             f"alternately: {args.rounds} rounds of {args.steps} steps each, the first step of every run left out.", "",
             f"Command: `python3 scripts/bench/run_bench.py --rounds {args.rounds} --steps {args.steps} "
             f"--threads {args.threads} --shapes {args.shapes}"
             + (f" --accum-splits {args.accum_splits}" if args.accum_splits else "") + "`", ""]
    table = ["| shape (tokens/step) | program | micro-batch x accumulation | tokens/s min / median / max | "
             "vs peer (median, same split) | vs peer as specified (micro-batch = batch) | fraction of matmul rate |",
             "|---|---|---|---|---|---|---|"]
    phase_table = ["| shape | program | split | " + " | ".join(PHASES[:-1]) + " |", "|---" * (3 + len(PHASES) - 1) + "|"]
    for shape, seq, rows in results:
        flops = model_flops_per_token(seq)
        medians = {v: statistics.median(r["tokens_per_s"] for r in rs) for v, rs in rows.items()}
        micro = int(shape.split("x")[0])
        peer_spec = medians[("peer", micro, 1)]
        for (prog, m, a), rs in rows.items():
            lo, med, hi = stats([r["tokens_per_s"] for r in rs])
            same = medians[("peer", m, a)]
            table.append(f"| {shape} | {prog} | {m} x {a} | {lo:.0f} / {med:.0f} / {hi:.0f} | "
                         f"{med / same:.2f}x | {med / peer_spec:.2f}x | {med * flops / rate:.0%} |")
            ph = phase_medians(rs)
            phase_table.append(f"| {shape} | {prog} | {m} x {a} | " +
                               " | ".join(f"{ph[k]:.3f}" if k in ph else "-" for k in PHASES[:-1]) + " |")
    lines += ["## Step split (median seconds per step)", "",
              "qkd-train's phases come from `metrics.jsonl` (`phases`), the peer's from its own timers; `gradients` is "
              "the global norm and its check, `optimizer` includes zero_grad.", ""] + phase_table + [""]
    lines += ["## Model FLOPs", "",
              f"Matmul FLOPs per trained token (teacher forward 2N + student forward 2N + student backward 4N over the "
              f"N = projection and lm_head weights, plus attention): {model_flops_per_token(256) / 1e6:.1f} MFLOP at "
              f"sequence length 256. The machine's fp32 matmul rate, measured in the peer's process (2048^3 products, "
              f"{args.threads} threads, median over the rounds): {rate / 1e9:.1f} GFLOP/s.", ""]
    lines += ["## Where the time went", "",
              "Profiled first (`perf record -g` on `qkd-train` at 4x256, one thread, and per-phase timers), then fixed:", "",
              "- **Full-vocabulary logits.** The loss now takes the final hidden states of both models through their "
              "output heads chunk by chunk (`loss::kd_loss_from_hidden`): no [tokens, vocab] logits tensor exists "
              "whole, the chunk's logits stay in cache between the products and the softmax passes, and the "
              "student's head gradient is formed in the same pass (fp16 keeps the logits path, see "
              "`include/qkd/loss/head_kd_loss.h`). The `loss` phase below includes the heads' products, which the "
              "peer counts in its forward and backward.",
              f"- **Attention products.** One layer's 32 head products as one batched product over {args.threads} "
              f"threads ran at {rates['attention_batched_flops_per_s'] / 1e9:.1f} GFLOP/s in this run, one head "
              f"product on one thread at {rates['attention_one_thread_flops_per_s'] / 1e9:.1f} GFLOP/s "
              "(`peer_step.py --attention-rates`). `kernels::causal_attention` gives each (sequence, key/value head) "
              "pair to one core, shares keys and values within a query group without `repeat_interleave` copies and "
              "writes the output in the layout o_proj reads.",
              "- **Page faults.** glibc returned every freed multi-megabyte tensor to the kernel (13.6% of a one-thread "
              "step in the kernel under `perf`); `keep_freed_memory_for_reuse` raises its mmap and trim thresholds "
              "at start-up.",
              "- **Per-chunk host reads.** The loss sums stay on the device and are read back once per micro-batch, not once per chunk; at "
              "temperature 1 the divisions by T are skipped (same values).",
              "- **Products too small for two cores.** At 4x256 a projection product is [1024, 256] x [256, 256]: "
              "OpenBLAS splitting it over 2 threads got about 1.4x one thread's rate, not 2x (teacher forward at 4x256 with `train.cpu_parallelism: operators`: 0.110-0.127 s on 2 threads against 0.154-0.189 s with `train.threads: 1`, two runs each on 2026-12-01). With "
              "`train.cpu_parallelism: rows` (the default) each core computes whole rows of the micro-batch "
              "(teacher forward, student forward, loss, backward) with single-threaded products, and the shards' "
              "gradients are added in shard order (`train/row_shards.h`, `kernels::run_on_cores`). qkd-train's "
              "phases above are then those of shard 0, which ran beside the other shards; the step also waits for "
              "the slowest shard and adds their gradients.",
              "- Tried and dropped: splitting each projection's product by rows over the threads "
              "(single-threaded BLAS per block) was no faster than OpenBLAS's own threading on these shapes.", ""]
    if args.offline_teacher:
        sys.path.insert(0, HERE)
        import offline_teacher
        lines += [offline_teacher.measure(args.binary), ""]
    lines += ["## Result", "",
              f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu_name()}); measured "
              f"{datetime.date.today().isoformat()}.", ""] + table + [""]
    return "\n".join(lines)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="16x256,4x256")
    ap.add_argument("--accum-splits", default="4*4", help="extra micro-batch*accumulation splits of a shape's tokens")
    ap.add_argument("--offline-teacher", action="store_true")
    ap.add_argument("--out", default="docs/PERFORMANCE.md")
    args = ap.parse_args()
    # Both programs get the same BLAS kernels (qkd-train picks them itself when this is unset).
    os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    results, rate = measure(args)
    out = os.path.join(ROOT, args.out)
    kept = ("## GPU", "## Tokenization") if args.offline_teacher else ("## Offline teacher", "## GPU", "## Tokenization")
    text = render(results, rate, args) + "".join(kept_section(out, heading) for heading in kept)
    with open(os.path.join(ROOT, args.out) + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(os.path.join(ROOT, args.out) + ".tmp", os.path.join(ROOT, args.out))
    print(text)


def kept_section(path, heading):
    """The document's section under `heading`, measured by another command (the GPU section by
    scripts/gpu/device_check.sh, the offline teacher's by scripts/bench/offline_teacher.py when this run
    does not measure it): kept as it is, after this run's sections."""
    if not os.path.exists(path):
        return ""
    text = open(path).read()
    start = text.find("\n" + heading)
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return "\n" + text[start:end if end >= 0 else len(text)].rstrip("\n")


if __name__ == "__main__":
    main()
