#!/usr/bin/env python3
"""Measured memory model of KD-QAT, and its projection to LLaMA-2-7B on one GPU.

Trains random LLaMA-shaped models of three sizes on the CPU for 2 steps each, one fresh `qkd-train`
process per (model, freeze, activation checkpointing, batch shape) setting, bf16 teacher and student,
fp32 master weights, AdamW moments in fp32 (plus one bf16-moment run per model). For every run it
records
  * the RSS once the session is set up (teacher, student, optimizer state, freeze applied; no step yet),
    read from /proc/PID/status when the trainer logs its "student: ... trainable parameters" line;
  * the high-water mark of that setup phase (VmHWM at the same moment);
  * the training peak: the high-water mark is then reset (`5` written to /proc/PID/clear_refs) and the
    trainer's own `peak_mem_mb` of the last step in metrics.jsonl (getrusage maxrss) is the peak of the
    two steps alone (summary.json's `peak_rss_mb` also covers the end-of-run checkpoint save).
The training peaks are fitted by least squares (written out below, stdlib only). A step peaks either at
the start of backward (A: state, fake-quantized weight copies, activations, logits) or at its end (B:
state and gradients). Without checkpointing A is the peak:
  peak = base + b_t x trainable params + b_f x frozen params [+ m16 x trainable, bf16 moments]
         + a x tokens x layers x hidden + c x batch x heads x seq^2 x layers (the CPU attention
         materializes its scores) + logits term (analytic, see LOGITS_* below);
with checkpointing B usually is: peak = base + b_t x trainable + b_f x frozen (+ a grad-norm temporary),
and the model predicts max(A, B). The fits are projected to LLaMA-2-7B on one GPU.
Writes docs/memory.md (atomically; a hand-written "## Reading" section there is kept).

  python3 scripts/bench_memory.py --binary build/qkd-train --random-llama build/qkd-bench-random-llama \
      --shapes-for 400M=1x128,2x128,1x256

The models are written under --scratch (default /tmp/qkd-memory) and reused when present; run
directories are deleted after each run (the end-of-run checkpoint of the 400M model is ~6 GB).
"""
import argparse, datetime, json, os, platform, shlex, shutil, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from doc_output import READING  # noqa: E402

MiB = 2 ** 20
GB = 1e9

SHIPPED_7M = "assets/models/kjv-teacher-7m"
MODELS = [
    {"name": "7M", "path": SHIPPED_7M},
    {"name": "100M", "hidden": 768, "layers": 12, "intermediate": 2048, "heads": 12, "kv_heads": 12},
    {"name": "400M", "hidden": 1280, "layers": 20, "intermediate": 3456, "heads": 20, "kv_heads": 20},
]
LLAMA2_7B = {"name": "LLaMA-2-7B", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}

# The loss (src/loss/kd_loss.cpp), for N tokens and vocabulary V, while all activations are alive:
#  * during the loss: the teacher's and the student's logits (bf16 here, 2 bytes each), the fp32 gradient
#    of the loss w.r.t. the student logits (4 bytes), and, one chunk of kd.chunk_tokens rows at a time,
#    about 7 fp32 [rows, V] temporaries (log-softmax of each side, both probabilities, their difference,
#    the KL and cross-entropy products);
#  * as backward starts: both logits, the saved fp32 gradient, its scaled fp32 copy (4) and that copy cast
#    to the logits' dtype (2).
LOGITS_LOSS_BYTES = 2 + 2 + 4
LOGITS_CHUNK_FP32_TEMPORARIES = 7
LOGITS_BACKWARD_BYTES = 2 + 2 + 4 + 4 + 2
CHUNK_TOKENS = 2048

QUANT = {"bits": 4, "granularity": "per_channel", "symmetric": True, "range": "minmax", "scale_policy": "dynamic",
         "modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def logits_bytes(tokens, vocab, chunk=CHUNK_TOKENS):
    during_loss = tokens * vocab * LOGITS_LOSS_BYTES + LOGITS_CHUNK_FP32_TEMPORARIES * 4 * min(tokens, chunk) * vocab
    return max(during_loss, tokens * vocab * LOGITS_BACKWARD_BYTES)


# ---------------------------------------------------------------------------------------------- models

def shape_of(config):
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    return {"hidden": h, "layers": config["num_hidden_layers"], "intermediate": config["intermediate_size"],
            "heads": heads, "kv_heads": config.get("num_key_value_heads") or heads,
            "head_dim": config.get("head_dim") or h // heads, "vocab": config["vocab_size"],
            "tied": bool(config.get("tie_word_embeddings", False))}


def parameter_counts(s):
    """Exact parameter count of a LLaMA (no biases) and the o_proj + v_proj share that ov-freeze freezes."""
    h, hd = s["hidden"], s["head_dim"]
    q, kv = s["heads"] * hd, s["kv_heads"] * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * s["intermediate"] + 2 * h
    embeddings = s["vocab"] * h * (1 if s["tied"] else 2)
    total = s["layers"] * per_layer + embeddings + h
    ov = s["layers"] * (q * h + h * kv)
    return total, ov


def prepare_models(args):
    models = []
    for m in MODELS:
        if m["name"] not in args.models:
            continue
        if "path" in m:
            path = m["path"]
        else:
            path = os.path.join(args.scratch, "models", "random-llama-%s" % m["name"].lower())
            key = {k: m[k] for k in ("hidden", "layers", "intermediate", "heads", "kv_heads")}
            stamp = os.path.join(path, "bench_memory.json")
            reuse = os.path.exists(stamp) and json.load(open(stamp)).get("shape") == key and \
                os.path.exists(os.path.join(path, "model.safetensors"))
            if not reuse:
                cmd = [args.random_llama, "--hidden", str(m["hidden"]), "--layers", str(m["layers"]),
                       "--intermediate", str(m["intermediate"]), "--heads", str(m["heads"]), "--kv-heads",
                       str(m["kv_heads"]), "--vocab", "4096", "--tokenizer", args.tokenizer, "--seed", "0",
                       "--out", path]
                print("generating %s: %s" % (m["name"], " ".join(cmd)), flush=True)
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                json.dump({"shape": key, "generated": json.loads(out.strip().splitlines()[-1])}, open(stamp, "w"))
            else:
                print("reusing %s at %s" % (m["name"], path), flush=True)
        s = shape_of(json.load(open(os.path.join(path, "config.json"))))
        total, ov = parameter_counts(s)
        print("  %s: %d parameters (%d in o_proj+v_proj), hidden %d, %d layers, intermediate %d, heads %d/%d, vocab %d"
              % (m["name"], total, ov, s["hidden"], s["layers"], s["intermediate"], s["heads"], s["kv_heads"],
                 s["vocab"]), flush=True)
        models.append({"name": m["name"], "path": path, "shape": s, "params": total, "ov_params": ov})
    return models


# ------------------------------------------------------------------------------------------------- runs

def run_config(model, run_dir, freeze, checkpointing, micro_batch, seq_len, moment_dtype, args, new_keys=True):
    optim = {"lr": 1e-5, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": 0, "grad_clip": 1.0}
    train = {"steps": args.steps, "micro_batch": micro_batch, "grad_accum": 1, "log_interval": 1, "eval_interval": 0,
             "device": "cpu", "precision": "fp32", "threads": args.threads, "seed": 0}
    if new_keys:
        optim["moment_dtype"] = moment_dtype
        train["activation_checkpointing"] = checkpointing
    return {
        "run_dir": run_dir,
        "label": os.path.basename(run_dir),
        "teacher": {"path": model["path"], "dtype": "bfloat16"},
        "student": {"init": "teacher", "dtype": "bfloat16"},
        "quant": QUANT,
        "data": {"sources": [{"path": args.data, "weight": 1.0}], "seq_len": seq_len, "seed": 5, "shuffle": True},
        "kd": {"divergence": "forward_kl", "kd_weight": 1.0, "ce_weight": 1.0, "temperature": 1.0,
               "chunk_tokens": CHUNK_TOKENS},
        "optim": optim,
        "train": train,
        "eval": {"ppl": [], "mc": []},
        "freeze": {"policy": freeze},
        "monitor": {"enabled": False},
        "checkpoint": {"interval": 0, "resume": "never"},
        "export": {"formats": []},
    }


def proc_status(pid):
    values = {}
    try:
        for line in open("/proc/%d/status" % pid):
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def run_trainer(binary, config, config_path, timeout):
    """One fresh qkd-train process. Returns the measurements, or raises with the trainer's stderr."""
    json.dump(config, open(config_path, "w"), indent=2)
    run_dir = config["run_dir"]
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    start = time.time()
    proc = subprocess.Popen([binary, "train", "--config", config_path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    setup, reset, sampled = {}, [False], [0]
    stderr_lines = []
    done = threading.Event()

    def sample():  # coarse RSS timeline after the setup (a cross-check of the trainer's own peak)
        while not done.wait(0.05):
            if setup:
                sampled[0] = max(sampled[0], proc_status(proc.pid).get("VmRSS", 0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            stderr_lines.append(line)
            if not setup and "student:" in line and "trainable parameters" in line:
                status = proc_status(proc.pid)
                setup.update(rss=status.get("VmRSS"), hwm=status.get("VmHWM"), seconds=time.time() - start)
                try:  # the high-water mark restarts from the current RSS: the trainer's peak is the steps'
                    with open("/proc/%d/clear_refs" % proc.pid, "w") as f:
                        f.write("5")
                    reset[0] = True
                except OSError as e:
                    print("    cannot reset the peak RSS (%s): the training peak includes the setup" % e)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    finally:
        timer.cancel()
        done.set()
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError("qkd-train exited with %s:\n%s" % (proc.returncode, "".join(stderr_lines[-15:])))
    steps = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    steps = [r for r in steps if r.get("type") == "train"]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    last = steps[-1]
    return {
        "setup_rss_mb": setup["rss"] / MiB if setup.get("rss") else None,
        "setup_peak_mb": setup["hwm"] / MiB if setup.get("hwm") else None,
        "setup_seconds": setup.get("seconds"),
        "hwm_reset": reset[0],
        "train_peak_mb": last["peak_mem_mb"],
        "step_peaks_mb": [r["peak_mem_mb"] for r in steps],
        "sampled_peak_mb": sampled[0] / MiB,
        "summary_peak_mb": summary["peak_rss_mb"],
        "maxrss_mb": usage.ru_maxrss / 1024.0,
        "trainable_params": last["trainable_params"],
        "step_seconds": [r["step_seconds"] for r in steps],
        "wall_seconds": wall,
    }


def probe_new_keys(args, model):
    """Whether the binary takes optim.moment_dtype and train.activation_checkpointing (a 1-step 7M run)."""
    run_dir = os.path.join(args.scratch, "runs", "probe")
    config = run_config(model, run_dir, "none", True, 1, 64, "bfloat16", argparse.Namespace(**{**vars(args), "steps": 1}))
    path = os.path.join(args.scratch, "configs", "probe.json")
    try:
        run_trainer(args.binary, config, path, 300)
        return True, ""
    except RuntimeError as e:
        return False, str(e)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def plan_runs(models, args, new_keys):
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    plan = []
    for m in models:
        model_shapes = shapes
        if m["name"] in args.shapes_for:
            model_shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes_for[m["name"]].split(",")]
        for freeze in ("none", "ov"):
            for ckpt in ((False, True) if new_keys else (False,)):
                for mb, seq in model_shapes:
                    plan.append((m, freeze, ckpt, mb, seq, "float32"))
        if new_keys:  # the moments' share: the smallest batch again with bf16 moments
            mb, seq = min(model_shapes, key=lambda s: s[0] * s[1])
            plan.append((m, "none", False, mb, seq, "bfloat16"))
    return plan


def run_all(models, args, new_keys):
    results = []
    cache_path = os.path.join(args.scratch, "results.jsonl")
    cache = {}
    if args.resume and os.path.exists(cache_path):
        for line in open(cache_path):
            r = json.loads(line)
            cache[r["key"]] = r
    binary_id = "%s:%d:%d" % (os.path.abspath(args.binary), os.path.getsize(args.binary),
                              int(os.path.getmtime(args.binary)))
    plan = plan_runs(models, args, new_keys)
    for i, (m, freeze, ckpt, mb, seq, moments) in enumerate(plan):
        name = "%s-%s-%s-%s-%dx%d" % (m["name"].lower(), freeze, "ckpt" if ckpt else "nockpt",
                                      "m16" if moments == "bfloat16" else "m32", mb, seq)
        run_dir = os.path.join(args.scratch, "runs", name)
        config = run_config(m, run_dir, freeze, ckpt, mb, seq, moments, args, new_keys)
        key = json.dumps([binary_id, config], sort_keys=True)
        if key in cache:
            r = cache[key]
            print("[%d/%d] %s: reused (%.0f MB)" % (i + 1, len(plan), name, r["train_peak_mb"]), flush=True)
        else:
            print("[%d/%d] %s ..." % (i + 1, len(plan), name), end=" ", flush=True)
            measured = run_trainer(args.binary, config, os.path.join(args.scratch, "configs", name + ".json"),
                                   args.timeout)
            shutil.rmtree(run_dir, ignore_errors=True)
            r = {"key": key, "name": name, "model": m["name"], "freeze": freeze, "checkpointing": ckpt,
                 "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "moment_dtype": moments, "micro_batch": mb, "seq_len": seq, **measured}
            with open(cache_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print("setup %.0f MB (setup peak %.0f), training peak %.0f MB, steps %s s, wall %.0f s"
                  % (r["setup_rss_mb"] or -1, r["setup_peak_mb"] or -1, r["train_peak_mb"],
                     "/".join("%.1f" % t for t in r["step_seconds"]), r["wall_seconds"]), flush=True)
        s = m["shape"]
        r = dict(r)
        r.update(params=m["params"], frozen_params=m["params"] - r["trainable_params"], layers=s["layers"],
                 largest_tensor=largest_tensor(s),
                 hidden=s["hidden"], heads=s["heads"], vocab=s["vocab"], tokens=mb * seq)
        results.append(r)
    return results


# -------------------------------------------------------------------------------------------------- fit

def solve(a, b):
    """Solves the square system a x = b by Gaussian elimination with partial pivoting."""
    n = len(a)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("singular system: a column is not determined by the runs")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    return [m[i][n] / m[i][i] for i in range(n)]


def least_squares(rows, y):
    """Ordinary least squares through the normal equations, on columns scaled to unit maximum."""
    k = len(rows[0])
    scale = [max(abs(r[j]) for r in rows) or 1.0 for j in range(k)]
    x = [[r[j] / scale[j] for j in range(k)] for r in rows]
    ata = [[sum(row[i] * row[j] for row in x) for j in range(k)] for i in range(k)]
    aty = [sum(row[i] * yi for row, yi in zip(x, y)) for i in range(k)]
    coef = solve(ata, aty)
    return [c / s for c, s in zip(coef, scale)]


def design(r, terms):
    return [t(r) for _, t in terms]


FIXED_TERMS = [
    ("base (bytes)", lambda r: 1.0),
    ("b_t (bytes / trainable parameter)", lambda r: r["trainable_params"]),
    ("b_f (bytes / frozen parameter)", lambda r: r["frozen_params"]),
]
MOMENT_TERM = ("m16 (bytes / trainable parameter, bf16 instead of fp32 moments)",
               lambda r: r["trainable_params"] if r["moment_dtype"] == "bfloat16" else 0.0)
ACT_TERM = ("a (bytes / (token x layer x hidden))", lambda r: r["tokens"] * r["layers"] * r["hidden"])
ATTN_TERM = ("c (bytes / (sequence x head x seq_len^2 x layer))",
             lambda r: r["micro_batch"] * r["heads"] * r["seq_len"] ** 2 * r["layers"])


def target(r):
    return r["train_peak_mb"] * MiB - logits_bytes(r["tokens"], r["vocab"])


KEPT_INPUT_BYTES = 2  # a checkpointed layer keeps its bf16 input for backward (activation_checkpoint.cpp)
# Moment B also holds one parameter-sized temporary pair at a time: global_grad_norm (grad_utils.cpp) takes
# each gradient to fp64 and squares it (8 + 8 bytes per element); the AdamW step's fp32 temporaries are
# smaller. Charged for the largest parameter tensor.
GRAD_NORM_BYTES = 16


def largest_tensor(s):
    h, hd = s["hidden"], s["head_dim"]
    return max(s["vocab"] * h, h * s["intermediate"], h * s["heads"] * hd, h * s["kv_heads"] * hd)


def fit(results):
    """The peak of a step is at one of two moments.
    A, the start of backward: the session's state, the fake-quantized weight copies the quantized linears
    saved, every saved activation and the loss's logits tensors. Without checkpointing this is the peak
    (backward frees a layer's copy as it allocates that layer's gradient, so copies + gradients never
    exceed the copies), fitted as base + b_t P_t + b_f P_f [+ m16 P_t] + a N L d + c B H T^2 L + logits.
    B, the end of backward and the optimizer step: the state and every gradient, no activations. With
    checkpointing, A holds only each layer's bf16 input, the logits and one recomputed layer, and B is
    usually larger: the fit is base + b_t P_t + b_f P_f over the runs whose A (predicted from the setup fit
    and the first fit) is below their B, and the prediction is max(A, B)."""
    off = [r for r in results if not r["checkpointing"]]
    on = [r for r in results if r["checkpointing"]]
    fits = {}
    # Static part: the RSS once set up, before any step (freeze none: see the setup table for ov).
    setup_runs = [r for r in results if r.get("setup_rss_mb") and r["moment_dtype"] == "float32" and
                  r["freeze"] == "none"]
    static_terms = FIXED_TERMS[:2]
    static = least_squares([design(r, static_terms) for r in setup_runs], [r["setup_rss_mb"] * MiB for r in setup_runs])
    fits["static"] = {"terms": [n for n, _ in static_terms], "coef": static, "runs": setup_runs}
    s_t = static[1]

    terms_off = FIXED_TERMS + ([MOMENT_TERM] if any(r["moment_dtype"] == "bfloat16" for r in off) else []) + \
        [ACT_TERM, ATTN_TERM]
    coef_off = least_squares([design(r, terms_off) for r in off], [target(r) for r in off])
    names_off = [n for n, _ in terms_off]
    fits["off"] = {"terms": names_off, "coef": coef_off, "runs": off,
                   "predict": lambda r, c=coef_off, t=terms_off: sum(ci * f(r) for ci, (_, f) in zip(c, t))
                   + logits_bytes(r["tokens"], r["vocab"])}
    base_off, b_f_off = coef_off[0], coef_off[2]
    m16 = coef_off[names_off.index(MOMENT_TERM[0])] if MOMENT_TERM[0] in names_off else 0.0
    a = coef_off[names_off.index(ACT_TERM[0])]
    c = coef_off[names_off.index(ATTN_TERM[0])]
    fits["phase_a_on"] = {"s_t": s_t, "base": base_off, "b_f": b_f_off, "a": a, "c": c, "m16": m16}

    def phase_a_on(r):
        moments = m16 * r["trainable_params"] if r["moment_dtype"] == "bfloat16" else 0.0
        return (base_off + (s_t * r["trainable_params"]) + moments + b_f_off * r["frozen_params"] +
                KEPT_INPUT_BYTES * r["tokens"] * r["layers"] * r["hidden"] + a * r["tokens"] * r["hidden"] +
                c * r["micro_batch"] * r["heads"] * r["seq_len"] ** 2 + logits_bytes(r["tokens"], r["vocab"]))

    if on:
        terms_on = FIXED_TERMS
        used = list(on)
        for _ in range(10):
            coef_on = least_squares([design(r, terms_on) for r in used],
                                    [r["train_peak_mb"] * MiB - GRAD_NORM_BYTES * r["largest_tensor"] for r in used])
            b = lambda r, c=coef_on: sum(ci * f(r) for ci, (_, f) in zip(c, terms_on)) + \
                GRAD_NORM_BYTES * r["largest_tensor"]
            now = [r for r in on if phase_a_on(r) <= b(r)]
            if now == used or len(now) < len(terms_on) + 1:
                break
            used = now
        for r in on:
            r["phase"] = "A" if phase_a_on(r) > b(r) else "B"
            r["in_fit"] = r in used
        fits["on"] = {"terms": [n for n, _ in terms_on], "coef": coef_on, "runs": on, "used": len(used),
                      "predict": lambda r, b=b: max(b(r), phase_a_on(r))}
    for key in ("off", "on"):
        for r in fits.get(key, {"runs": []})["runs"]:
            predicted = fits[key]["predict"](r) / MiB
            r["predicted_mb"] = predicted
            r["residual_mb"] = r["train_peak_mb"] - predicted
    return fits


# ----------------------------------------------------------------------------------------------- project

def project_7b(fits, args, models):
    s = shape_of(LLAMA2_7B)
    s["head_dim"] = s["hidden"] // s["heads"]
    total, ov = parameter_counts(s)
    off, on, pa = fits["off"], fits.get("on"), fits["phase_a_on"]
    a, c, m16 = pa["a"], pa["c"], pa["m16"]
    bt_off, bf_off = coef_of(off, FIXED_TERMS[1][0]), coef_of(off, FIXED_TERMS[2][0])
    static_bt = pa["s_t"]
    rows = []
    for mb in (2, 4):
        seq = 2048
        tokens = mb * seq
        for ckpt in (False, True):
            if ckpt and not on:
                continue
            for freeze in ("none", "ov"):
                for moments in ("float32", "bfloat16"):
                    if moments == "bfloat16" and MOMENT_TERM[0] not in off["terms"]:
                        continue
                    frozen = ov if freeze == "ov" else 0
                    trainable = total - frozen
                    narrow = m16 * trainable if moments == "bfloat16" else 0.0
                    logits = logits_bytes(tokens, s["vocab"])
                    if ckpt:
                        acts = KEPT_INPUT_BYTES * tokens * s["layers"] * s["hidden"] + a * tokens * s["hidden"]
                        state_a = static_bt * trainable + bf_off * frozen + narrow
                    else:
                        acts = a * tokens * s["layers"] * s["hidden"]
                        state_a = bt_off * trainable + bf_off * frozen + narrow
                    phase_a = state_a + acts + logits
                    # End of backward: state + every gradient (the checkpointed fit; the same tensors either way).
                    phase_b = (coef_of(on, FIXED_TERMS[1][0]) * trainable + coef_of(on, FIXED_TERMS[2][0]) * frozen
                               + narrow + GRAD_NORM_BYTES * largest_tensor(s)) if on else 0.0
                    # Setup: every parameter gets its master and moments before the initial freeze drops
                    # the frozen ones' (the setup fit's bytes per parameter, all trainable).
                    setup = (static_bt + (m16 if moments == "bfloat16" else 0.0)) * total
                    peak = max(phase_a, phase_b, setup) + args.cuda_context_gb * GB
                    attn = c * mb * s["heads"] * seq ** 2 * (1 if ckpt else s["layers"])
                    rows.append({"micro_batch": mb, "seq_len": seq, "tokens": tokens, "checkpointing": ckpt,
                                 "freeze": freeze, "moment_dtype": moments, "trainable": trainable, "frozen": frozen,
                                 "state_a_gb": state_a / GB, "acts_gb": acts / GB, "logits_gb": logits / GB,
                                 "phase_a_gb": phase_a / GB, "phase_b_gb": phase_b / GB, "setup_gb": setup / GB,
                                 "peak_gb": peak / GB, "eager_attention_gb": attn / GB})
    return {"params": total, "ov": ov, "shape": s, "rows": rows, "models": models}


# ------------------------------------------------------------------------------------------------- report

def fmt_params(n):
    return "{:,}".format(n)


def fits_in(peak_gb, capacity, reserve):
    if peak_gb <= capacity * (1 - reserve):
        return "yes"
    if peak_gb <= capacity:
        return "tight"
    return "no"


def write_atomically_keeping_reading(path, generated):
    """doc_output.write_keeping_reading, but through a temporary file renamed into place."""
    reading = ""
    if os.path.exists(path):
        old = open(path).read()
        if READING in old:
            reading = old[old.index(READING):]
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".memory-", suffix=".md", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(generated + reading)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return "%d CPU cores (%s), %.1f GiB RAM, %s" % (os.cpu_count(), cpu or "unknown CPU", mem / 2 ** 30,
                                                     platform.platform())


def report(models, results, fits, proj, args, command, new_keys, probe_error):
    L = []
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L += ["# Memory of KD-QAT: measured on CPU, projected to LLaMA-2-7B", "",
          "Generated by `%s` on %s (%s); %d runs of `%s`, each a fresh process training %d steps, measured %s."
          % (command, today, machine(), len(results), args.binary, args.steps, measured_span(results))
          + (" `--resume` reused the runs that `%s/results.jsonl` holds for the same binary (path, size, "
             "modification time) and the same configs; the table's numbers are those runs' measurements."
             % args.scratch if args.resume else ""), ""]
    L += ["## What was measured", "",
          "Random LLaMA-shaped models (`benchmarks/random_llama.cpp`: weights normal(0, 0.02), norms 1, bf16 on disk, "
          "the shipped 4096-token tokenizer; the 7M model is the shipped `%s` itself), trained by `qkd-train train` on "
          "`%s` for %d steps with: teacher and student in bfloat16 on the CPU (`train.precision` fp32: no autocast, "
          "the modules' dtype decides), fp32 master weights of the bf16 student (the optimizer's), AdamW moments in "
          "`optim.moment_dtype`, W4 per-channel dynamic fake quantization of the seven projections, forward KL + "
          "cross-entropy (`kd.chunk_tokens` %d), grad_clip 1, no evaluation, no monitor, no export, %d threads. "
          "Each setting is a fresh process; settings: `freeze.policy` none or ov, `train.activation_checkpointing` "
          "off or on, and batch shapes (micro_batch x seq_len)."
          % (SHIPPED_7M, args.data, args.steps, CHUNK_TOKENS, args.threads), "",
          "Per run: **setup RSS** is the resident set once the session is built (teacher, student, master weights, "
          "moments, initial freeze applied) and before the first step, read from `/proc/PID/status` when the trainer "
          "logs its `student: ... trainable parameters` line; **setup peak** is the high-water mark at that moment "
          "(it includes transients of loading and of building the optimizer); the high-water mark is then reset "
          "(`5` into `/proc/PID/clear_refs`) and **training peak** is the trainer's `peak_mem_mb` (getrusage maxrss) "
          "of the last step in `metrics.jsonl`: the peak of the steps alone. `summary.json`'s `peak_rss_mb`, which "
          "also covers the end-of-run checkpoint save, is listed as **end peak**.", ""]
    if not new_keys:
        L += ["**Partial run** (`--without-new-keys`): `optim.moment_dtype` and `train.activation_checkpointing` "
              "were left out of the configs, so only the binary's default moments (fp32) without checkpointing "
              "were measured.", ""]
    L += ["| model | parameters | o_proj+v_proj | hidden | layers | intermediate | heads | vocab |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in models:
        s = m["shape"]
        L.append("| %s | %s | %s | %d | %d | %d | %d/%d | %d |" % (
            m["name"], fmt_params(m["params"]), fmt_params(m["ov_params"]), s["hidden"], s["layers"],
            s["intermediate"], s["heads"], s["kv_heads"], s["vocab"]))
    L += ["", "## Measured", "",
          "| model | freeze | checkpointing | moments | batch | tokens | trainable | setup RSS MB | setup peak MB "
          "| training peak MB | end peak MB | step s |",
          "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        L.append("| %s | %s | %s | %s | %dx%d | %d | %s | %.0f | %.0f | %.0f | %.0f | %s |" % (
            r["model"], r["freeze"], "on" if r["checkpointing"] else "off",
            "bf16" if r["moment_dtype"] == "bfloat16" else "fp32", r["micro_batch"], r["seq_len"], r["tokens"],
            fmt_params(r["trainable_params"]), r["setup_rss_mb"] or float("nan"), r["setup_peak_mb"] or float("nan"),
            r["train_peak_mb"], r["summary_peak_mb"], "/".join("%.1f" % t for t in r["step_seconds"])))
    L += ["", "Setup, averaged over each model's fp32-moment runs. The optimizer builds master weights and moments "
          "for every parameter; the initial ov freeze then drops those of o_proj+v_proj (12 bytes per parameter "
          "with fp32 moments).", "",
          "| model | setup RSS none MB | setup RSS ov MB | none - ov MB | freed by the freeze MB | setup peak MB |",
          "|---|---:|---:|---:|---:|---:|"]
    kept = []
    for m in models:
        by = {}
        for freeze in ("none", "ov"):
            rs = [r for r in results if r["model"] == m["name"] and r["freeze"] == freeze and
                  r["moment_dtype"] == "float32" and r.get("setup_rss_mb")]
            if rs:
                by[freeze] = (sum(r["setup_rss_mb"] for r in rs) / len(rs), max(r["setup_peak_mb"] for r in rs))
        if len(by) == 2:
            freed = 12 * m["ov_params"] / MiB
            diff = by["none"][0] - by["ov"][0]
            kept.append(diff < 0.5 * freed)
            L.append("| %s | %.0f | %.0f | %.0f | %.0f | %.0f |" % (m["name"], by["none"][0], by["ov"][0], diff, freed,
                                                                    max(by["none"][1], by["ov"][1])))
    if kept and all(kept):
        L += ["", "The RSS does not drop when the freeze frees that state: glibc keeps the freed chunks in the "
              "process's heap (it returns only the top of the heap to the system) and the steps reuse them, so "
              "ov's saving shows in the training peak, not in the setup RSS. The setup fit below therefore uses the "
              "freeze-none runs only. A CUDA caching allocator behaves alike: the blocks stay reserved and are "
              "reused; the setup peak is all parameters with their optimizer state."]
    elif kept and not any(kept):
        L += ["", "The RSS drops by about the freed state."]
    elif kept:
        L += ["", "The RSS drops by about the freed state in some models and not in others (glibc returns freed "
              "memory to the system only from the top of the heap or for chunks above its mmap threshold)."]
    if not all(r["hwm_reset"] for r in results):
        L += ["", "Some runs could not reset the high-water mark; their training peak includes the setup."]

    if not fits:
        L += ["", "No fit: the runs do not determine every term (at least two model sizes are needed)."]
        return "\n".join(L) + "\n"
    # the fitted model
    pa = fits["phase_a_on"]
    L += ["", "## Fitted model", "",
          "A step's peak is at one of two moments. **A**, the start of backward: the session's state, the "
          "fake-quantized weight copies the quantized linears saved for backward, every saved activation and "
          "the loss's logits tensors. **B**, the end of backward and the optimizer step: the state and every "
          "gradient, no activations. Backward frees each layer's weight copy as it allocates that layer's "
          "gradient (both bf16, the same size), so without checkpointing A is the peak. With checkpointing A "
          "holds only each layer's input, the logits and one recomputed layer, and B is usually the larger.", "",
          "The logits term is computed from `src/loss/kd_loss.cpp`, not fitted (all three models share "
          "vocabulary 4096, so it cannot be told apart from a per-token constant here): logits bytes = "
          "max(tokens x vocab x %d + %d x 4 x min(tokens, kd.chunk_tokens) x vocab, tokens x vocab x %d). The "
          "first is the loss computation: teacher and student logits (bf16, 2 bytes each), the fp32 gradient "
          "w.r.t. the student logits (4), and the fp32 temporaries of one chunk (log-softmax of both sides, both "
          "probabilities, their difference, the KL and cross-entropy products); the second is the start of "
          "backward: both logits, the saved fp32 gradient, its scaled fp32 copy and that copy cast to bf16. For "
          "the runs here that is %.0f-%.0f MB."
          % (LOGITS_LOSS_BYTES, LOGITS_CHUNK_FP32_TEMPORARIES, LOGITS_BACKWARD_BYTES,
             min(logits_bytes(r["tokens"], r["vocab"]) for r in results) / MiB,
             max(logits_bytes(r["tokens"], r["vocab"]) for r in results) / MiB), "",
          "Least squares (normal equations, columns scaled to unit maximum):", "",
          "* Without checkpointing, moment A over all its runs: peak - logits = base + b_t x trainable + b_f x "
          "frozen parameters [+ m16 x trainable with bf16 moments] + a x tokens x layers x hidden + c x batch x "
          "heads x seq_len^2 x layers.",
          "* With checkpointing, moment B: peak - %d x the largest parameter tensor's elements (`global_grad_norm` "
          "takes one gradient at a time to fp64 and squares it) = base + b_t x trainable + b_f x frozen, over the "
          "runs whose "
          "predicted A is below their fitted B (%d of %d); the prediction of a run is max(A, B), with A = base "
          "and b_f of the first fit + the setup fit's bytes per parameter x trainable (no weight copies) + %d "
          "bytes (bf16 layer input, kept by `qkd::model::checkpoint`) x tokens x layers x hidden + one layer's "
          "a x tokens x hidden + c x batch x heads x seq_len^2 + logits."
          % (GRAD_NORM_BYTES, fits["on"]["used"] if "on" in fits else 0,
             len(fits["on"]["runs"]) if "on" in fits else 0, KEPT_INPUT_BYTES),
          "* The setup RSS of the freeze-none runs: base + bytes per parameter x parameters.", ""]
    labels = {"off": "Without activation checkpointing (moment A)",
              "on": "With activation checkpointing (moment B)",
              "static": "Setup RSS (before the first step), freeze none, fp32 moments"}
    for key in ("off", "on", "static"):
        if key not in fits:
            continue
        f = fits[key]
        n = f.get("used", len(f["runs"]))
        L += ["**%s** (%d runs):" % (labels[key], n), "", "| term | coefficient |", "|---|---:|"]
        for name, c in zip(f["terms"], f["coef"]):
            if key == "static" and name.startswith("b_t"):
                name = "bytes / parameter"
            L.append("| %s | %s |" % (name, ("%.0f MB" % (c / MiB)) if name.startswith("base") else "%.2f" % c))
        L.append("")
    L += explain(fits, results)
    L += ["### Residuals", "",
          "Measured training peak against the model's (with checkpointing: the moment the model puts the peak at; "
          "runs outside the B fit are marked).", "",
          "| run | measured MB | fitted MB | residual MB | residual % | moment |", "|---|---:|---:|---:|---:|---|"]
    for key in ("off", "on"):
        for r in fits.get(key, {"runs": []})["runs"]:
            moment = "A" if key == "off" else (r["phase"] + ("" if r["in_fit"] else ", not in the B fit"))
            L.append("| %s | %.0f | %.0f | %+.0f | %+.1f | %s |" % (
                r["name"], r["train_peak_mb"], r["predicted_mb"], r["residual_mb"],
                100 * r["residual_mb"] / r["train_peak_mb"], moment))
    worst = {}
    for key in ("off", "on"):
        for r in fits.get(key, {"runs": []})["runs"]:
            w = worst.setdefault(r["model"], [0.0, 0.0])
            w[0] = max(w[0], abs(r["residual_mb"]))
            w[1] = max(w[1], abs(100 * r["residual_mb"] / r["train_peak_mb"]))
    L += ["", "Largest residual per model: %s." % "; ".join("%s %.0f MB (%.1f%%)" % (k, v[0], v[1])
                                                            for k, v in worst.items())]
    L += projection_section(fits, proj, args)
    return "\n".join(L) + "\n"


def measured_span(results):
    times = sorted(r["measured_at"] for r in results if r.get("measured_at"))
    if not times:
        return "at unrecorded times"
    return times[0] if times[0] == times[-1] else "%s to %s" % (times[0], times[-1])


def coef_of(f, name):
    names = f["terms"]
    return f["coef"][names.index(name)] if name in names else None


def explain(fits, results):
    off, on, static = fits["off"], fits.get("on"), fits["static"]
    L = ["### Bytes per parameter", ""]
    bt, bf = coef_of(off, FIXED_TERMS[1][0]), coef_of(off, FIXED_TERMS[2][0])
    st = coef_of(static, FIXED_TERMS[1][0])
    m16 = coef_of(off, MOMENT_TERM[0])
    L.append("Expected for a trainable parameter: 2 (bf16 teacher) + 2 (bf16 student) + 4 (fp32 master) + 8 (two "
             "fp32 moments) = 16 bytes held from setup on, + 2 at the peak = 18. The 2 are, without checkpointing, "
             "the fake-quantized bf16 copy of the weight that each quantized linear saves for its backward pass; "
             "backward frees those copies layer by layer while it allocates the bf16 gradients layer by layer, so "
             "copies + gradients stay near 2 bytes per parameter throughout (20 would need both at once). With "
             "checkpointing only the recomputed layer has a copy, and the 2 are the gradients at the end of "
             "backward. A frozen (ov) projection: 2 + 2 + 2 (its fake-quantized weight, cached while frozen: "
             "`LinearImpl::FrozenWeightCache`) = 6, no gradient, no optimizer state.")
    L.append("")
    L.append("Measured: setup RSS %.2f bytes per parameter (freeze none; expected 16); training peak without "
             "checkpointing %.2f per trainable and %.2f per frozen parameter (expected 18 and 6)%s."
             % (st, bt, bf, (", with checkpointing %.2f and %.2f (expected 18 and 6)"
                             % (coef_of(on, FIXED_TERMS[1][0]), coef_of(on, FIXED_TERMS[2][0]))) if on else ""))
    if m16 is not None:
        L.append("bf16 instead of fp32 moments changes the peak by %.2f bytes per trainable parameter (expected -4)."
                 % m16)
    ref = on or off
    over_t, over_f = coef_of(ref, FIXED_TERMS[1][0]) - 18, coef_of(ref, FIXED_TERMS[2][0]) - 6
    s7 = dict(shape_of(LLAMA2_7B), head_dim=LLAMA2_7B["hidden_size"] // LLAMA2_7B["num_attention_heads"])
    total7, ov7 = parameter_counts(s7)
    L.append("The excess over 18 and 6 (%+.2f and %+.2f bytes%s) is about the same for trainable and frozen "
             "parameters, and it is not state the code holds: the setup RSS is %.2f bytes per parameter, as "
             "counted. It is RSS the steps leave behind, most likely glibc's heap keeping the weight-sized "
             "tensors each step frees (fake-quantized copies, gradients, the optimizer's fp32 temporaries) in "
             "pieces it cannot return; a CUDA caching allocator shows the like as reserved-but-free blocks. The "
             "projection keeps it, so for LLaMA-2-7B with ov it errs high by up to about %.1f GB."
             % (over_t, over_f, ", %s" % ("with checkpointing" if on else "without checkpointing"), st,
                (over_t * (total7 - ov7) + over_f * ov7) / GB))
    L.append("")
    s7 = dict(shape_of(LLAMA2_7B), head_dim=LLAMA2_7B["hidden_size"] // LLAMA2_7B["num_attention_heads"])
    share_7b = 2 * s7["vocab"] * s7["hidden"] / parameter_counts(s7)[0]
    per_model = _one_per_model(results)
    share_largest = m_share(max(per_model, key=lambda r: r["params"]))
    L.append("Embeddings, lm_head and norms train but are not fake-quantized (no copy): 2 bytes less than a "
             "projection. They are %s of the parameters in the %s models and %.1f%% in LLaMA-2-7B; at the largest "
             "model's share, which dominates the fit, that shifts the bytes per trainable parameter for 7B by "
             "about 2 x (%.1f%% - %.1f%%) = %+.3f bytes, left out." % (
                 ", ".join("%.1f%%" % (100 * m_share(r)) for r in per_model),
                 ", ".join(r["model"] for r in per_model), 100 * share_7b, 100 * share_largest, 100 * share_7b,
                 2 * (share_largest - share_7b)))
    L.append("")
    a = coef_of(off, ACT_TERM[0])
    c = coef_of(off, ATTN_TERM[0])
    L.append("Activations without checkpointing: %.1f bytes per token per layer per hidden unit, plus %.1f bytes per "
             "element of the [batch, heads, seq, seq] attention scores per layer (the CPU path of "
             "`compat::causal_attention` materializes scores and probabilities; CUDA LibTorch 2.x runs "
             "`scaled_dot_product_attention`, which keeps no such matrix)." % (a, c))
    if on:
        a_runs = [r["name"] for r in on["runs"] if r["phase"] == "A"]
        L.append("With checkpointing %d of %d runs peak at moment B, state and gradients: %.2f bytes per "
                 "trainable parameter, where the batch shape hardly matters (the largest model's freeze-none peaks "
                 "with checkpointing span %s MB across its batch shapes)%s." % (
                     len(on["runs"]) - len(a_runs), len(on["runs"]), coef_of(on, FIXED_TERMS[1][0]),
                     _span(on["runs"], max(r["params"] for r in on["runs"])),
                     ("; the model puts %s at moment A" % ", ".join(a_runs)) if a_runs else ""))
    L.append("")
    return L


def _span(runs, params):
    peaks = [r["train_peak_mb"] for r in runs if r["params"] == params and r["freeze"] == "none"]
    return "%.0f-%.0f" % (min(peaks), max(peaks)) if peaks else "?"


def m_share(r):
    h, v = r["hidden"], r["vocab"]
    return (2 * v * h) / r["params"]


def _one_per_model(results):
    seen, out = set(), []
    for r in results:
        if r["model"] not in seen:
            seen.add(r["model"])
            out.append(r)
    return out


def projection_section(fits, proj, args):
    s = proj["shape"]
    L = ["", "## Projection: LLaMA-2-7B on one GPU", "",
         "LLaMA-2-7B: hidden %d, %d layers, intermediate %d, %d heads, vocabulary %d, %s parameters, of which "
         "o_proj+v_proj %s (2 x 4096^2 per layer)." % (s["hidden"], s["layers"], s["intermediate"], s["heads"],
                                                       s["vocab"], fmt_params(proj["params"]), fmt_params(proj["ov"])),
         "", "Assumptions:", "",
         "* The fitted bytes per trainable and per frozen parameter and per token x layer x hidden carry over from "
         "the CPU to CUDA: the same tensors are allocated (the code paths are the same but for attention). The "
         "fixed CPU-process base of the fit (LibTorch, the data file, the allocator) is left out; instead %.1f GB "
         "of CUDA context and cuBLAS workspace is added." % args.cuda_context_gb,
         "* Teacher in float16 or bfloat16 (2 bytes per parameter either way on a GPU), student bfloat16, "
         "`train.precision` bf16; every projection W4 fake-quantized as here; lm_head not quantized. The CPU runs "
         "had no autocast; with bf16 modules, CUDA's bf16 autocast leaves the matmuls as they are, and the fp32 "
         "parts (RMSNorm statistics, softmax) are already explicit fp32 in the code, so activations are taken to "
         "be the same tensors.",
         "* Attention on CUDA is `scaled_dot_product_attention` (flash / memory-efficient), so the fitted "
         "seq_len^2 term is not charged. Were the math path used, it would add the \"eager attention\" column.",
         "* Activations scale with tokens x layers x hidden: LLaMA-2-7B's intermediate/hidden (%.2f) is close to "
         "the measured models' (%s)." % (s["intermediate"] / s["hidden"], ", ".join(
             "%.2f" % (m["shape"]["intermediate"] / m["shape"]["hidden"]) for m in proj["models"])),
         "* The logits term as above with vocabulary 32000 and `kd.chunk_tokens` %d." % CHUNK_TOKENS,
         "* The CUDA caching allocator's rounding and fragmentation are not modelled: \"fits with room\" asks for "
         "the projection to stay under %.0f%% of the card; \"tight\" is above that but under 100%%." % (
             100 * (1 - args.reserve)),
         "* grad_accum does not change the peak (gradients accumulate in place; activations are per micro-batch). "
         "Evaluation (no grad) and the monitor are not included.",
         "* Setup: the optimizer gets master weights and moments for every parameter before the initial freeze "
         "removes the frozen ones' (see the setup table above), so before any step the memory reaches the setup "
         "fit's bytes per parameter (bf16 moments: plus m16) x all %s parameters (\"setup\" column). Freed "
         "blocks go back to the caching allocator, which reuses them for the steps."
         % fmt_params(proj["params"]),
         "* Moment A without checkpointing: b_t x trainable + b_f x frozen (+ m16 x trainable for bf16 "
         "moments) + a x tokens x layers x hidden + logits. With checkpointing: the setup fit's bytes per "
         "parameter x trainable + b_f x frozen (+ m16) + %d x tokens x layers x hidden (bf16 layer inputs) + "
         "one layer's a x tokens x hidden + logits. Moment B: the checkpointed fit's b_t x trainable + b_f x "
         "frozen (+ m16) + %d x %s (the largest tensor, embed_tokens / lm_head: %.1f GB); it is the same state "
         "and gradients without checkpointing. The projected peak is the largest of A, B and setup, plus the "
         "CUDA context. On a GPU the trainer's `peak_mem_mb` is the caching allocator's allocated peak: compare "
         "it with the projection less the context." % (KEPT_INPUT_BYTES, GRAD_NORM_BYTES,
                                                       fmt_params(largest_tensor(s)),
                                                       GRAD_NORM_BYTES * largest_tensor(s) / GB),
         "", "| batch | checkpointing | freeze | moments | A: state GB | A: activations GB | A: logits GB | "
         "A GB | B GB | setup GB | projected peak GB | 141 GB (H200) | 80 GB (A100/H100) | eager attention "
         "would add GB |",
         "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in proj["rows"]:
        L.append("| %dx%d | %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | **%.1f** | %s | %s | %.0f |" % (
            r["micro_batch"], r["seq_len"], "on" if r["checkpointing"] else "off", r["freeze"],
            "bf16" if r["moment_dtype"] == "bfloat16" else "fp32", r["state_a_gb"], r["acts_gb"], r["logits_gb"],
            r["phase_a_gb"], r["phase_b_gb"], r["setup_gb"], r["peak_gb"], fits_in(r["peak_gb"], 141, args.reserve),
            fits_in(r["peak_gb"], 80, args.reserve), r["eager_attention_gb"]))
    L += ["", "## Recommendation for configs/llama7b.json", ""]
    L += recommend(proj, args)
    return L


def recommend(proj, args):
    rows = proj["rows"]
    roomy = [r for r in rows if r["peak_gb"] <= 141 * (1 - args.reserve)]
    L = []
    if not roomy:
        L.append("No setting measured here fits 141 GB with %.0f%% to spare." % (100 * args.reserve))
    else:
        # Most tokens per micro-batch first, then fp32 moments over bf16, then no checkpointing (faster).
        best = sorted(roomy, key=lambda r: (-r["tokens"], r["moment_dtype"] != "float32", r["checkpointing"],
                                            r["freeze"] != "ov", r["peak_gb"]))[0]
        ov_fp32 = [r for r in roomy if r["freeze"] == "ov" and r["moment_dtype"] == "float32"]
        if ov_fp32:
            best = sorted(ov_fp32, key=lambda r: (-r["tokens"], r["checkpointing"], r["peak_gb"]))[0]
        accum = max(1, 32 // best["micro_batch"])
        L.append("Recipe: `freeze.policy` %s, `train.micro_batch` %d with `data.seq_len` %d, `train.grad_accum` %d "
                 "(%d sequences per step, as the current 4 x 8), `train.activation_checkpointing` %s, "
                 "`optim.moment_dtype` %s: projected %.1f GB, %.0f%% of 141 GB."
                 % (best["freeze"], best["micro_batch"], best["seq_len"], accum, best["micro_batch"] * accum,
                    "true" if best["checkpointing"] else "false", best["moment_dtype"], best["peak_gb"],
                    100 * best["peak_gb"] / 141))
        alternatives = [r for r in roomy if r is not best]
        if alternatives:
            L.append("")
            L.append("Other settings under %.0f%% of 141 GB: %s." % (100 * (1 - args.reserve), "; ".join(
                "%dx%d %s ckpt %s %s moments %.1f GB" % (r["micro_batch"], r["seq_len"], r["freeze"],
                                                          "on" if r["checkpointing"] else "off",
                                                          "bf16" if r["moment_dtype"] == "bfloat16" else "fp32",
                                                          r["peak_gb"]) for r in alternatives)))
    L.append("")
    fit80 = [r for r in rows if r["peak_gb"] <= 80]
    if fit80:
        r = min(fit80, key=lambda r: r["peak_gb"])
        L.append("80 GB: %d setting(s) project under 80 GB; the smallest is %dx%d, freeze %s, checkpointing %s, %s "
                 "moments at %.1f GB." % (len(fit80), r["micro_batch"], r["seq_len"], r["freeze"],
                                          "on" if r["checkpointing"] else "off", r["moment_dtype"], r["peak_gb"]))
    else:
        smallest = min(rows, key=lambda r: r["peak_gb"])
        L.append("80 GB: no setting fits without sharding. The smallest projection (%dx%d, freeze %s, checkpointing "
                 "%s, %s moments) is %.1f GB; its moment B alone (weights, master, moments, gradients, no "
                 "activation) is %.1f GB, and even the setup before any step is %.1f GB."
                 % (smallest["micro_batch"], smallest["seq_len"], smallest["freeze"],
                    "on" if smallest["checkpointing"] else "off", smallest["moment_dtype"], smallest["peak_gb"],
                    smallest["phase_b_gb"], smallest["setup_gb"]))
    return L


# --------------------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--random-llama", default="build/qkd-bench-random-llama")
    ap.add_argument("--scratch", default="/tmp/qkd-memory")
    ap.add_argument("--models", default="7M,100M,400M", help="comma-separated subset of 7M,100M,400M")
    ap.add_argument("--shapes", default="1x256,4x256,2x512", help="micro_batch x seq_len settings per model")
    ap.add_argument("--shapes-for", action="append", default=[], metavar="MODEL=SHAPES",
                    help="other shapes for one model, e.g. 400M=1x256,2x256,1x512")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="assets/data/kjv/kjv-train.u16")
    ap.add_argument("--tokenizer", default="assets/models/kjv-teacher-7m/tokenizer.model")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--cuda-context-gb", type=float, default=2.0)
    ap.add_argument("--reserve", type=float, default=0.10, help="share of the GPU kept free for 'fits with room'")
    ap.add_argument("--without-new-keys", action="store_true",
                    help="omit optim.moment_dtype and train.activation_checkpointing (binaries without them)")
    ap.add_argument("--resume", action="store_true", help="reuse runs recorded in SCRATCH/results.jsonl "
                    "with the same binary and config")
    ap.add_argument("--out", default="docs/memory.md")
    args = ap.parse_args()
    args.models = args.models.split(",")
    args.shapes_for = dict(s.split("=", 1) for s in args.shapes_for)
    command = "python3 scripts/bench_memory.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for d in ("models", "runs", "configs"):
        os.makedirs(os.path.join(args.scratch, d), exist_ok=True)

    models = prepare_models(args)
    new_keys, probe_error = False, ""
    if not args.without_new_keys:
        new_keys, probe_error = probe_new_keys(args, models[0])
        if not new_keys:
            sys.exit("%s does not accept optim.moment_dtype / train.activation_checkpointing yet "
                     "(use --without-new-keys for a partial run):\n%s" % (args.binary, probe_error))
    results = run_all(models, args, new_keys)
    try:
        fits = fit(results)
    except ValueError as e:  # e.g. one model only: its base and bytes per parameter are not separable
        print("no fit: %s" % e, file=sys.stderr)
        fits = None
    proj = project_7b(fits, args, models) if fits else None
    text = report(models, results, fits, proj, args, command, new_keys, probe_error)
    write_atomically_keeping_reading(args.out, text)
    json.dump({"results": results,
               "fits": {k: ({"terms": v["terms"], "coef": v["coef"]} if "terms" in v else v)
                        for k, v in (fits or {}).items()},
               "projection": {k: v for k, v in (proj or {}).items() if k != "models"}}, open(os.path.join(args.scratch, "memory.json"), "w"), indent=1, default=str)
    print(text)


if __name__ == "__main__":
    main()
