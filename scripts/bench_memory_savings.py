#!/usr/bin/env python3
"""The 80 GB recipe for LLaMA-2-7B: each memory saving's accuracy cost on the main job and the bytes per
parameter it removes, measured on the CPU, and the 7B peak they project to (one GPU, and per rank with
ZeRO-1 on 2, 4 and 8 ranks). Writes the "## 80 GB recipe" section of docs/memory.md (the rest of the
file, which scripts/bench_memory.py writes, is kept).

  python3 scripts/bench_memory_savings.py --binary build/qkd-train --random-llama build/qkd-bench-random-llama

Accuracy: the main job (configs/tiny-kjv.json: the shipped 7M teacher, W4 per channel, 60 steps) once per
setting, each a fresh `qkd-train` run with `--set` overrides and no export; final val ppl and cloze
accuracy from summary.json. The master-weight savings only exist for a bf16 student, so they are compared
with the same job with a bf16 student (fp32 master weights and moments); the moment formats also with the
shipped fp32 student.

Bytes per parameter: scripts/bench_memory.py's harness (one fresh process per setting, 2 steps, RSS once
set up and the training peak) on its random 100M model, bf16 teacher and student, activation
checkpointing, freeze none, 1 x 256 tokens, one setting changed at a time. The setup RSS difference over
the parameters is what a saving removes from the state; the training peak difference includes the step's
temporaries.

Projection: the fit of docs/memory.md (moment B with checkpointing, moment A, setup) with the measured
savings subtracted per parameter, for LLaMA-2-7B with freeze ov at 4 x 2048 tokens.
"""
import argparse, datetime, json, os, re, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_memory as bm  # noqa: E402
from doc_output import replace_section  # noqa: E402

HEADING = "## 80 GB recipe"
MAIN = "configs/tiny-kjv.json"
BF16 = ["student.dtype=bfloat16"]
# (name, overrides, baseline row name): each accuracy setting of the main job. The teacher stays as the
# main job ships it (fp32 on the CPU): the recipe keeps configs/llama7b.json's float16 teacher, so its
# dtype is not one of the savings.
BF16_BASE = "bf16 student, fp32 master, fp32 moments"
FP32_BASE = "fp32 student (main job as shipped)"
ACCURACY = [
    (FP32_BASE, [], None),
    (BF16_BASE, BF16, FP32_BASE),
    ("bf16 student, bf16-compensated master", BF16 + ["optim.master_weights=bf16_compensated"], BF16_BASE),
    ("bf16 student, int8 moments", BF16 + ["optim.moment_dtype=int8"], BF16_BASE),
    ("**recipe**: bf16 student, compensated master + int8 moments",
     BF16 + ["optim.master_weights=bf16_compensated", "optim.moment_dtype=int8"], BF16_BASE),
    ("bf16 student, no master", BF16 + ["optim.master_weights=none"], BF16_BASE),
    ("bf16 student, bf16 moments", BF16 + ["optim.moment_dtype=bfloat16"], BF16_BASE),
    ("fp32 student, int8 moments", ["optim.moment_dtype=int8"], FP32_BASE),
]
# (name, optim changes, teacher source): each memory setting on the 100M model.
MEMORY = [
    ("baseline: fp32 master, fp32 moments", {}, "online"),
    ("bf16-compensated master", {"master_weights": "bf16_compensated"}, "online"),
    ("bf16 moments", {"moment_dtype": "bfloat16"}, "online"),
    ("int8 moments", {"moment_dtype": "int8"}, "online"),
    ("compensated + int8 moments", {"master_weights": "bf16_compensated", "moment_dtype": "int8"}, "online"),
    ("compensated + int8 moments, offline teacher (k 32)",
     {"master_weights": "bf16_compensated", "moment_dtype": "int8"}, "cache"),
]


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -------------------------------------------------------------------------------------------- accuracy

def accuracy_command(args, name, overrides):
    run_dir = os.path.join(args.runs, "accuracy", re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    sets = ["run_dir=" + run_dir, "export.formats=[]", "train.threads=%d" % args.accuracy_threads] + overrides
    return run_dir, [args.binary, "--config", MAIN] + [x for s in sets for x in ("--set", s)]


def run_accuracy(args):
    """Every setting's run, args.jobs at a time (one thread each by default: the result does not depend on
    what runs beside it, only the wall seconds do)."""
    todo, running = [], []
    for index, (name, overrides, _) in enumerate(ACCURACY):
        if args.accuracy_rows is not None and index not in args.accuracy_rows:
            continue
        run_dir, cmd = accuracy_command(args, name, overrides)
        if args.resume and os.path.exists(os.path.join(run_dir, "summary.json")):
            continue
        todo.append((name, run_dir, cmd))
    while todo or running:
        while todo and len(running) < args.jobs:
            name, run_dir, cmd = todo.pop(0)
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(os.path.dirname(run_dir), exist_ok=True)
            print("accuracy: %s ..." % name, flush=True)
            log = open(run_dir + ".log", "w")
            running.append((name, cmd, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.time(), log))
        time.sleep(2)
        for item in list(running):
            name, cmd, proc, start, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode != 0:
                raise RuntimeError("%s failed (%s):\n%s" % (" ".join(cmd), proc.returncode,
                                                          open(log.name, errors="replace").read()[-2000:]))
            print("  %s: %.0f s" % (name, time.time() - start), flush=True)
    rows = []
    for name, overrides, baseline in ACCURACY:
        run_dir, cmd = accuracy_command(args, name, overrides)
        summary_path = os.path.join(run_dir, "summary.json")
        if not os.path.exists(summary_path):
            continue
        s = json.load(open(summary_path))
        final = s.get("final_eval", {})
        rows.append({"name": name, "baseline": baseline, "command": " ".join(cmd), "summary": s,
                     "ppl": val_ppl(final), "cloze": cloze(final), "seconds": s.get("wall_seconds")})
    by_name = {r["name"]: r for r in rows}
    if FP32_BASE not in by_name and args.main_job_ppl:
        # Not re-run here: today's main job as docs/training-results.md measured it (same config and thread count).
        row = {"name": FP32_BASE + ", cited", "baseline": None, "ppl": args.main_job_ppl, "cloze": None,
               "seconds": None, "summary": {}, "command": "(not re-run: val ppl %s from docs/training-results.md, "
               "`qkd-train --config %s --set export.formats=[] --set train.threads=1`)" % (args.main_job_ppl, MAIN)}
        rows.insert(0, row)
        by_name[FP32_BASE] = row
    for r in rows:
        if r["baseline"] in by_name:
            r["delta"] = r["ppl"] - by_name[r["baseline"]]["ppl"]
        if FP32_BASE in by_name and r is not by_name[FP32_BASE]:
            r["delta_main"] = r["ppl"] - by_name[FP32_BASE]["ppl"]
    return rows


def val_ppl(final):
    """The validation perplexity in a summary's final_eval (its first perplexity file)."""
    for key in ("ppl", "perplexity"):
        v = final.get(key)
        if isinstance(v, dict):
            for item in v.values():
                return item["ppl"] if isinstance(item, dict) else item
        if isinstance(v, list) and v:
            return v[0]["ppl"] if isinstance(v[0], dict) else v[0]
        if isinstance(v, (int, float)):
            return v
    raise KeyError("no perplexity in final_eval: %s" % json.dumps(final)[:300])


def cloze(final):
    for key in ("mc", "multiple_choice"):
        v = final.get(key)
        if isinstance(v, dict):
            for item in v.values():
                return item.get("acc") if isinstance(item, dict) else item
        if isinstance(v, list) and v:
            return v[0].get("acc")
    return None


# ---------------------------------------------------------------------------------------------- memory

def memory_config(model, run_dir, optim, teacher, args, cache_dir):
    config = bm.run_config(model, run_dir, "none", True, args.micro_batch, args.seq_len, "float32", args)
    config["optim"].update(optim)
    if teacher == "cache":
        config["kd"].update({"teacher": "cache", "teacher_cache": cache_dir})
    return config


def run_memory(args):
    models = bm.prepare_models(argparse.Namespace(**{**vars(args), "models": [args.memory_model]}))
    model = models[0]
    os.makedirs(os.path.join(args.scratch, "configs"), exist_ok=True)
    cache_dir = os.path.join(args.scratch, "teacher-cache-k32")
    rows = []
    for name, optim, teacher in MEMORY:
        tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        run_dir = os.path.join(args.scratch, "runs", tag)
        config = memory_config(model, run_dir, optim, teacher, args, cache_dir)
        config_path = os.path.join(args.scratch, "configs", tag + ".json")
        if teacher == "cache" and not os.path.exists(os.path.join(cache_dir, "manifest.json")):
            # The cache of the same run with its teacher online (a cache-teacher config names no cache).
            online = memory_config(model, run_dir, optim, "online", args, cache_dir)
            json.dump(online, open(config_path, "w"), indent=2)
            cmd = [args.binary, "cache-teacher", "--config", config_path, "--out", cache_dir, "--top-k", "32"]
            print("cache: " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, capture_output=True)
        print("memory: %s ..." % name, end=" ", flush=True)
        measured = bm.run_trainer(args.binary, config, config_path, args.timeout)
        shutil.rmtree(run_dir, ignore_errors=True)
        print("setup %.0f MB, training peak %.0f MB" % (measured["setup_rss_mb"], measured["train_peak_mb"]), flush=True)
        rows.append({"name": name, "optim": optim, "teacher": teacher, "params": model["params"], **measured})
    base = rows[0]
    for r in rows:
        r["setup_saved_bytes_per_param"] = (base["setup_rss_mb"] - r["setup_rss_mb"]) * bm.MiB / r["params"]
        r["peak_saved_bytes_per_param"] = (base["train_peak_mb"] - r["train_peak_mb"]) * bm.MiB / r["params"]
    return model, rows


# ------------------------------------------------------------------------------------------ projection

def fit_from_doc(path):
    """The coefficients docs/memory.md states (scripts/bench_memory.py's fit), by table."""
    text = open(path).read()

    def table(title):
        start = text.index(title)
        out = {}
        for line in text[start:].splitlines()[2:12]:
            m = re.match(r"\| (.+?) \| ([-0-9.]+)( MB)? \|", line)
            if not m:
                if out:
                    break
                continue
            out[m.group(1).split(" (")[0]] = float(m.group(2)) * (1e6 if m.group(3) else 1.0)
        return out

    return {"A": table("**Without activation checkpointing (moment A)**"),
            "B": table("**With activation checkpointing (moment B)**"),
            "setup": table("**Setup RSS (before the first step)")}


def saving(rows, name):
    for r in rows:
        if r["name"] == name:
            return r["setup_saved_bytes_per_param"]
    raise KeyError(name)


def project(fit, rows, args):
    s = bm.shape_of(bm.LLAMA2_7B)
    s["head_dim"] = s["hidden"] // s["heads"]
    total, ov = bm.parameter_counts(s)
    trainable, frozen = total - ov, ov
    tokens = args.project_micro_batch * 2048
    logits = bm.logits_bytes(tokens, s["vocab"])
    b_t, b_f = fit["B"]["b_t"], fit["B"]["b_f"]
    s_t, a = fit["setup"]["bytes / parameter"], fit["A"]["a"]
    variants = []
    # (label, master saving, moments saving, teacher saving per parameter, optimizer state bytes per
    # trainable parameter left (what ZeRO-1 divides), teacher source)
    comp = saving(rows, "bf16-compensated master")
    int8 = saving(rows, "int8 moments")
    m16 = saving(rows, "bf16 moments")
    teacher_cache = saving(rows, "compensated + int8 moments, offline teacher (k 32)") - \
        saving(rows, "compensated + int8 moments")
    plans = [
        ("configs/llama7b.json today: fp32 master, fp32 moments", 0.0, 0.0, 0.0, 12.0, "fp16 online"),
        ("bf16 moments (exists)", 0.0, m16, 0.0, 8.0, "fp16 online"),
        ("bf16-compensated master", comp, 0.0, 0.0, 10.0, "fp16 online"),
        ("int8 moments", 0.0, int8, 0.0, 12.0 - int8, "fp16 online"),
        ("**recipe**: compensated master + int8 moments", comp, int8, 0.0, 10.0 - int8, "fp16 online"),
        ("recipe + offline teacher (k 32)", comp, int8, teacher_cache, 10.0 - int8, "cache"),
    ]
    for label, d_master, d_moments, d_teacher, state, teacher in plans:
        d_t = d_master + d_moments + d_teacher
        row = {"label": label, "teacher": teacher, "saved_per_trainable": d_t, "saved_per_frozen": d_teacher,
               "state_per_trainable": state}
        for ranks in (1, 2, 4, 8):
            sharded = state * trainable * (1 - 1.0 / ranks)
            phase_b = (b_t - d_t) * trainable + (b_f - d_teacher) * frozen + bm.GRAD_NORM_BYTES * bm.largest_tensor(s) \
                - sharded
            phase_a = (s_t - d_t) * trainable + (b_f - d_teacher) * frozen + \
                bm.KEPT_INPUT_BYTES * tokens * s["layers"] * s["hidden"] + a * tokens * s["hidden"] + logits - sharded
            # Before the initial freeze every parameter gets its optimizer state (ZeRO-1: its owner only).
            setup = (s_t - d_t) * total - state * total * (1 - 1.0 / ranks)
            peak = max(phase_a, phase_b, setup) + args.cuda_context_gb * bm.GB
            row[ranks] = {"A": phase_a / bm.GB, "B": phase_b / bm.GB, "setup": setup / bm.GB, "peak": peak / bm.GB}
        variants.append(row)
    return {"total": total, "ov": ov, "trainable": trainable, "frozen": frozen, "tokens": tokens,
            "variants": variants, "fit": fit}


# ---------------------------------------------------------------------------------------------- report

def write(args, accuracy, model, memory, proj):
    L = [HEADING, ""]
    L.append("Generated by `python3 scripts/bench_memory_savings.py %s` on %s (%s). **These are projections from CPU "
             "measurements**: no GPU has run the 32-layer model with these settings yet; "
             "`bash scripts/gpu/device_check.sh` measures the recipe's peak against `configs/llama7b.json` on the "
             "7B-shaped model (`recipe` phase) when a GPU session runs it, and until then the 80 GB fit below is a "
             "projection. The projection and recommendation sections above (`scripts/bench_memory.py`) know fp32 "
             "master weights and fp32 or bf16 moments only; this section adds the savings and "
             "`configs/llama7b-80gb.json` (`configs/llama7b.json` with `optim.master_weights` bf16_compensated and "
             "`optim.moment_dtype` int8, nothing else changed)." % (" ".join(args.argv), now(), bm.machine()))
    L.append("")
    L.append("The savings (`docs/config.md`): `optim.master_weights` `bf16_compensated` keeps a bf16 compensation "
             "(Kahan summation) instead of the fp32 master copy of each bf16 weight, `none` keeps nothing (updates "
             "below half a bf16 step are lost); `optim.moment_dtype` `int8` stores both AdamW moments as block-wise "
             "8-bit codes (bitsandbytes' dynamic map, 256-element blocks with an fp32 maximum each; tensors under "
             "4096 elements stay fp32); `kd.teacher` `cache` trains from the teacher's cached top-k instead of "
             "holding the teacher (`docs/offline-teacher.md`). All of them checkpoint and resume bitwise and shard "
             "under ZeRO-1 (`tests/unit/test_optimizer_savings.cpp`).")
    L.append("")
    if accuracy:
        L.append("### Accuracy cost on the main job")
        L.append("")
        L.append("`%s` (7M teacher in fp32, W4 per channel, 60 steps x 4096 tokens), final val ppl on kjv-val.u16 and "
                 "cloze accuracy on kjv-cloze-val.jsonl; each row one run of the command listed below (one thread "
                 "each, %d runs at a time). Today's main job has an fp32 student, which has no master weights; the "
                 "master-weight savings need a bf16 student, so each saving is compared with the bf16-student row "
                 "(fp32 master and moments, today's `configs/llama7b.json` optimizer) and, in the last column, with "
                 "today's main job. The bar is |Δ ppl| <= 0.01 against its baseline (two runs of the same config on "
                 "different days differed by 0.002, `docs/training-results.md`)." % (MAIN, args.jobs))
        L.append("")
        L.append("| setting | val ppl | Δ ppl vs its baseline | Δ ppl vs today's main job | cloze acc | wall s |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in accuracy:
            delta = "%+.3f" % r["delta"] if "delta" in r else "(baseline)"
            main = "%+.3f" % r["delta_main"] if "delta_main" in r else "(baseline)"
            L.append("| %s | %.3f | %s | %s | %s | %s |" % (r["name"], r["ppl"], delta, main,
                                                           "%.3f" % r["cloze"] if r["cloze"] is not None else "-",
                                                           "%.0f" % r["seconds"] if r["seconds"] else "-"))
        L.append("")
        L.append("Commands:")
        L.append("")
        L.append("```")
        for r in accuracy:
            L.append(r["command"])
        L.append("```")
        L.append("")
    L.append("### Bytes per parameter")
    L.append("")
    L.append("%s model (%s parameters, `scripts/bench_memory.py`'s random LLaMA), bf16 teacher and student, freeze "
             "none (every parameter trains), activation checkpointing, %dx%d tokens, %d step(s), %d threads, one fresh "
             "process per setting. Setup RSS: once set up, before the first step (the optimizer state exists by "
             "then); training peak: the steps' high-water mark. Saved: the baseline's minus the setting's, over "
             "the parameters."
             % (model["name"], bm.fmt_params(model["params"]), args.micro_batch, args.seq_len, args.steps,
                args.threads))
    L.append("")
    L.append("| setting | setup RSS MB | training peak MB | saved at setup, bytes/param | saved at the peak, bytes/param | expected |")
    L.append("|---|---:|---:|---:|---:|---:|")
    expected = {"bf16-compensated master": "2", "no master": "4", "bf16 moments": "4", "int8 moments": "5.97",
                "compensated + int8 moments": "7.97", "compensated + int8 moments, offline teacher (k 32)": "9.97"}
    for r in memory:
        L.append("| %s | %.0f | %.0f | %.2f | %.2f | %s |" % (
            r["name"], r["setup_rss_mb"], r["train_peak_mb"], r["setup_saved_bytes_per_param"],
            r["peak_saved_bytes_per_param"], expected.get(r["name"], "-")))
    L.append("")
    L.append("Expected: an fp32 master is 4 bytes, a bf16 compensation 2; two fp32 moments 8, bf16 4, int8 2 x (1 + "
             "4/256) = 2.03 (so int8 saves 5.97); the bf16 teacher 2. The offline teacher adds the cache reader's "
             "buffers and drops the teacher's activations. The training peak saves less than the setup: int8 moments "
             "and the compensation are widened to fp32 for the update, about 32 bytes of temporaries per element of "
             "the tensor being updated, and on this model the largest tensor (the 4096 x 768 embedding, 3.1M "
             "elements: about 100 MB, 1.1 bytes per parameter) is updated whole. On LLaMA-2-7B the update runs in "
             "pieces of at most 16M elements (`kUpdatePiece`), so those temporaries are at most about 0.5 GB "
             "whatever the model; the projection below does not add them, so read each saving row as up to 0.5 GB "
             "higher.")
    L.append("")
    L.append("### LLaMA-2-7B projection")
    L.append("")
    L.append("The fit above (moment B with checkpointing: b_t %.2f bytes per trainable and b_f %.2f per frozen "
             "parameter, %d bytes per element of the largest tensor for the gradient norm; moment A and the setup "
             "as in the projection section) with each saving's measured bytes per parameter (setup column) taken "
             "off per trainable parameter, the teacher's also per frozen one; freeze ov (%s trainable, %s frozen), "
             "%d x 2048 tokens, checkpointing, 2.0 GB of CUDA context. ZeRO-1 on R ranks divides the optimizer "
             "state (the master or compensation and the moments: the last column but one, per trainable parameter) "
             "by R and keeps the rest (teachers, student, gradients, activations) on every rank; the offline "
             "teacher runs in one process only (`kd.teacher cache` refuses several ranks), so its row has no "
             "ZeRO-1 figures. 90%% of 80 GB is 72 GB."
             % (proj["fit"]["B"]["b_t"], proj["fit"]["B"]["b_f"], bm.GRAD_NORM_BYTES, bm.fmt_params(proj["trainable"]),
                bm.fmt_params(proj["frozen"]), args.project_micro_batch))
    L.append("")
    L.append("| setting | teacher | saved bytes / trainable param | optimizer state bytes / trainable param | "
             "A GB | B GB | setup GB | peak GB, 1 GPU | 80 GB | per rank, ZeRO-1 x2 | x4 | x8 |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for v in proj["variants"]:
        one = v[1]
        zero = ["%.1f" % v[r]["peak"] if v["teacher"] != "cache" else "-" for r in (2, 4, 8)]
        L.append("| %s | %s | %.2f | %.2f | %.1f | %.1f | %.1f | **%.1f** | %s | %s |" % (
            v["label"], v["teacher"], v["saved_per_trainable"], v["state_per_trainable"], one["A"], one["B"],
            one["setup"], one["peak"], bm.fits_in(one["peak"], 80, 0.10), " | ".join(zero)))
    L.append("")
    replace_section(args.out, HEADING, "\n".join(L))
    print("wrote the %s section of %s" % (HEADING, args.out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--random-llama", default="build/qkd-bench-random-llama")
    ap.add_argument("--scratch", default="/tmp/qkd-memory-savings")
    ap.add_argument("--runs", default="runs/memory-savings", help="the accuracy runs' directories")
    ap.add_argument("--memory-model", default="100M", help="one of scripts/bench_memory.py's models")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--project-micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of each memory run")
    ap.add_argument("--jobs", type=int, default=2, help="accuracy runs at a time")
    ap.add_argument("--accuracy-threads", type=int, default=1, help="threads of each accuracy run")
    ap.add_argument("--accuracy-rows", type=lambda v: [int(x) for x in v.split(",")],
                    help="run only these accuracy settings, by index into ACCURACY (0,1,4); the table still "
                         "shows every setting whose run directory holds a summary.json")
    ap.add_argument("--data", default="assets/data/kjv/kjv-train.u16")
    ap.add_argument("--tokenizer", default="assets/models/kjv-teacher-7m/tokenizer.model")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--cuda-context-gb", type=float, default=2.0)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-memory", action="store_true", help="run the accuracy settings and stop (no section written)")
    ap.add_argument("--resume", action="store_true", help="reuse accuracy runs whose summary.json exists")
    ap.add_argument("--main-job-ppl", type=float,
                    help="today's main job's val ppl to compare with when its row (0) was not run here")
    ap.add_argument("--reuse-memory", action="store_true",
                    help="take the memory rows from SCRATCH/memory.json (an earlier run's) instead of measuring")
    ap.add_argument("--out", default="docs/memory.md")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.shapes_for = {}
    accuracy = [] if args.skip_accuracy else run_accuracy(args)
    if args.skip_memory:  # the accuracy runs only; a later --resume --reuse-memory run writes the section
        return
    memory_path = os.path.join(args.scratch, "memory.json")
    if args.reuse_memory and os.path.exists(memory_path):
        model, memory = json.load(open(memory_path))
    else:
        model, memory = run_memory(args)
        os.makedirs(args.scratch, exist_ok=True)
        json.dump([model, memory], open(memory_path, "w"), indent=1, default=str)
    proj = project(fit_from_doc(args.out), memory, args)
    json.dump({"accuracy": accuracy, "memory": memory, "projection": proj},
              open(os.path.join(args.scratch, "results.json"), "w"), indent=1, default=str)
    write(args, accuracy, model, memory, proj)


if __name__ == "__main__":
    main()
