#!/usr/bin/env python3
"""GPTQ against round to nearest (RTN) on the shipped teacher, as PTQ and as the start of KD-QAT.

PTQ: `qkd-train ptq --method rtn|gptq` at W4 and W3 per channel, W3 g64 asym and W2 g32 asym, each then
evaluated by `qkd-train eval` (perplexity on kjv-val.u16, cloze accuracy on kjv-cloze-val.jsonl). GPTQ
calibrates on the first 128 windows of configs/tiny-kjv.json's training stream.
KD-QAT: configs/tiny-kjv.json (60 steps, lr 1e-3 as scripts/bench_train.py uses for W3) at W3 per
channel and W2 g32 asym, starting from RTN (student.init teacher) and from GPTQ (student.init gptq, latent
weights Q or compensated), all with static scales (what a GPTQ start needs), plus the shipped dynamic-scale
RTN start for reference.
Document masking: the main job (configs/tiny-kjv.json as shipped) with and without data.document_mask, each
final student evaluated on packed windows (what the run's own eval does) and per document (eval --document-mask).
Appends (or replaces) one section in docs/quantization-results.md and two in docs/training-results.md.
  python3 scripts/gptq_results.py [--binary build/qkd-train] [--act-order] [--skip-ptq] [--skip-train]
                                  [--skip-mask] [--reuse]
"""
import argparse, json, os, re, shutil, subprocess

MODEL = "assets/models/kjv-teacher-7m"
VAL = "assets/data/kjv/kjv-val.u16"
CLOZE = "assets/data/kjv/kjv-cloze-val.jsonl"
CONFIG = "configs/tiny-kjv.json"
CALIB = ["--calib-config", CONFIG, "--calib-batches", "128"]

GRIDS = {
    "W4 per channel": (["--bits", "4"], ["quant.bits=4"]),
    "W3 per channel": (["--bits", "3"], ["quant.bits=3"]),
    "W3 g64 asym": (["--bits", "3", "--granularity", "per_group", "--group-size", "64", "--asymmetric"],
                    ["quant.bits=3", "quant.granularity=per_group", "quant.group_size=64", "quant.symmetric=false"]),
    "W2 g32 asym": (["--bits", "2", "--granularity", "per_group", "--group-size", "32", "--asymmetric"],
                    ["quant.bits=2", "quant.granularity=per_group", "quant.group_size=32", "quant.symmetric=false"]),
}
PTQ_METHODS = [("RTN", ["--method", "rtn"]), ("GPTQ", ["--method", "gptq"] + CALIB)]
ACT_ORDER = ("GPTQ act-order", ["--method", "gptq", "--act-order"] + CALIB)
TRAIN_GRIDS = ["W3 per channel", "W2 g32 asym"]
TRAIN_INITS = [  # label, overrides
    ("RTN, static scales", ["student.init=teacher", "quant.scale_policy=static"]),
    ("GPTQ, static scales", ["student.init=gptq", "quant.scale_policy=static"]),
    ("GPTQ compensated latent, static scales",
     ["student.init=gptq", "student.gptq_latent=compensated", "quant.scale_policy=static"]),
    ("RTN, dynamic scales (shipped)", ["student.init=teacher", "quant.scale_policy=dynamic"]),
]
# 16 x 1 micro-batches: the split the shipped config had when these were first measured (same tokens/step).
TRAIN_COMMON = ["optim.lr=0.001", "train.micro_batch=16", "train.grad_accum=1", "export.formats=[]",
                "eval.at_start=false", "train.threads=1"]
SECTION = "## GPTQ vs round to nearest"
MASK_SECTION = "## Document masking"
MASK_RUNS = [("packed windows (shipped)", []), ("data.document_mask true", ["data.document_mask=true"])]


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def evaluate(binary, student, out_json, extra=()):
    model = ["--student", student] if student else []
    subprocess.run([binary, "eval", "--model", MODEL] + model + ["--ppl", VAL, "--mc", CLOZE, "--seq-len",
                    "256", "--batch-size", "16", "--threads", "1", "--json", out_json] + list(extra), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ptq_rows(args, methods):
    rows, ppl = [], {}
    for grid, (flags, _) in GRIDS.items():
        cells = []
        for method, method_flags in methods:
            out = os.path.join(args.work, "ptq", slug(f"{grid}-{method}"))
            result = out + ".eval.json"
            if not (args.reuse and os.path.exists(result)):
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run([args.binary, "ptq", "--model", MODEL, "--out", out] + flags + method_flags, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
                evaluate(args.binary, out, result)
            p, acc, acc_norm = read_eval(result)
            ppl[(grid, method)] = p
            cells.append(f"{p:.3f} | {acc:.3f} / {acc_norm:.3f}")
        rows.append(f"| {grid} | " + " | ".join(cells) + f" | {ppl[(grid, 'GPTQ')] - ppl[(grid, 'RTN')]:+.3f} |")
        print(rows[-1], flush=True)
    return rows


def read_eval(path):
    result = json.load(open(path))
    mc = result["mc"][os.path.basename(CLOZE)]
    return result["ppl"][os.path.basename(VAL)], mc["acc"], mc["acc_norm"]


def train_rows(args):
    rows, final = [], {}
    for grid in TRAIN_GRIDS:
        for init, overrides in TRAIN_INITS:
            run_dir = os.path.join(args.work, "train", slug(f"{grid}-{init}"))
            summary_path = os.path.join(run_dir, "summary.json")
            finished = os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
            if not (args.reuse and finished):
                shutil.rmtree(run_dir, ignore_errors=True)
                sets = [f"run_dir={run_dir}"] + GRIDS[grid][1] + TRAIN_COMMON + overrides
                cmd = [args.binary, "--config", CONFIG] + [a for s in sets for a in ("--set", s)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            summary = json.load(open(summary_path))
            start = json.load(open(os.path.join(run_dir, "baselines.json")))["student"][os.path.basename(VAL)]
            ev = summary["final_eval"]
            mc = ev["mc"][os.path.basename(CLOZE)]
            p = ev["ppl"][os.path.basename(VAL)]
            final[(grid, init)] = p
            steps = json.load(open(os.path.join(run_dir, "config.json")))["train"]["steps"]
            rows.append(f"| {grid} | {init} | {steps} | {start:.3f} | {p:.3f} | {mc['acc']:.3f} / {mc['acc_norm']:.3f} | "
                        f"{summary['wall_seconds']:.0f} |")
            print(rows[-1], flush=True)
    verdicts = []
    for grid in TRAIN_GRIDS:
        rtn = final[(grid, "RTN, static scales")]
        for init, _ in TRAIN_INITS:
            if not init.startswith("GPTQ") or (grid, init) not in final:
                continue
            d = final[(grid, init)] - rtn
            verdicts.append(f"- {grid}: KD-QAT from {init} ends {abs(d):.3f} perplexity "
                            f"{'below' if d < 0 else 'above'} KD-QAT from RTN with static scales "
                            f"({'GPTQ better' if d < 0 else 'GPTQ worse'}).")
    return rows, verdicts


def mask_rows(args):
    """The main job with and without data.document_mask; each final student evaluated both ways."""
    rows, finals = [], {}
    teacher = {}
    for how, extra in (("packed", []), ("per document", ["--document-mask"])):
        result = os.path.join(args.work, "mask", f"teacher-{slug(how)}.eval.json")
        if not (args.reuse and os.path.exists(result)):
            os.makedirs(os.path.dirname(result), exist_ok=True)
            evaluate(args.binary, None, result, extra)
        teacher[how] = read_eval(result)
    rows.append(f"| teacher (fp16 weights) | - | {teacher['packed'][0]:.3f} | {teacher['per document'][0]:.3f} | "
                f"{teacher['packed'][1]:.3f} / {teacher['packed'][2]:.3f} | - |")
    print(rows[-1], flush=True)
    for label, overrides in MASK_RUNS:
        run_dir = os.path.join(args.work, "mask", slug(label))
        summary_path = os.path.join(run_dir, "summary.json")
        finished = os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
        if not (args.reuse and finished):
            shutil.rmtree(run_dir, ignore_errors=True)
            sets = [f"run_dir={run_dir}", "export.formats=[]", "train.threads=1"] + overrides
            subprocess.run([args.binary, "--config", CONFIG] + [a for s in sets for a in ("--set", s)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = json.load(open(summary_path))
        student = summary["last_checkpoint"]  # eval --student reads a training checkpoint as export does
        per_doc = os.path.join(run_dir, "eval-per-document.json")
        if not (args.reuse and os.path.exists(per_doc)):
            evaluate(args.binary, student, per_doc, ["--document-mask"])
        packed = os.path.join(run_dir, "eval-packed.json")
        if not (args.reuse and os.path.exists(packed)):
            evaluate(args.binary, student, packed)
        p_packed, acc, acc_norm = read_eval(packed)
        p_doc = read_eval(per_doc)[0]
        finals[label] = (p_packed, p_doc)
        ev = summary["final_eval"]["ppl"][os.path.basename(VAL)]
        rows.append(f"| {label} | {ev:.3f} | {p_packed:.3f} | {p_doc:.3f} | {acc:.3f} / {acc_norm:.3f} | "
                    f"{summary['wall_seconds']:.0f} |")
        print(rows[-1], flush=True)
    (plain_packed, plain_doc), (mask_packed, mask_doc) = (finals[label] for label, _ in MASK_RUNS)
    reading = (f"Document masking changes the main job's final val ppl by {mask_packed - plain_packed:+.3f} on packed "
               f"windows and by {mask_doc - plain_doc:+.3f} per document. Two runs of the same config on different days "
               "differed by 0.002 (29.418, 29.416), so differences under about 0.02 are noise. The two runs here ran "
               "beside the GPTQ runs of this script, so their wall seconds compare only roughly.")
    return rows, reading


def mask_section(rows, reading, cpu):
    return (f"{MASK_SECTION}\n\n"
            "Measured by `python3 scripts/gptq_results.py --skip-ptq --skip-train` on " + cpu + ": the main job "
            f"`qkd-train --config {CONFIG} --set run_dir=DIR --set export.formats=[] --set train.threads=1`, and the "
            "same with "
            "`--set data.document_mask=true` (attention inside each KJV chapter, positions from each chapter's BOS; "
            "kjv-train.u16 holds 1,070 chapters, about 853 tokens each, so about 30% of the 256-token windows "
            "cross a boundary; counted with `python3 -c \"import array; a = array.array('H'); "
            "a.frombytes(open('assets/data/kjv/kjv-train.u16', 'rb').read()); print(len(a), a.count(1))\"`, "
            "which prints 912570 1070). Each final student is then evaluated by "
            f"`qkd-train eval --model {MODEL} --student DIR/checkpoints/step-00000060 --ppl {VAL} --mc {CLOZE} "
            "--seq-len 256 --batch-size 16 --threads 1`, on packed windows as the run's own evaluation does, and with "
            "`--document-mask` per document. The teacher row is the same evaluation of the teacher.\n\n"
            "| run | run's final val ppl | val ppl, packed windows | val ppl, per document | cloze acc / acc_norm | "
            "wall s |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + reading + "\n")


def write_section(path, section, heading=SECTION):
    """Replaces this script's section in `path` (from its heading to the next heading of the same
    level, or the end), or appends it; everything else in the file stays."""
    text = open(path).read() if os.path.exists(path) else ""
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    open(path, "w").write(text)


def ptq_section(rows, cpu, methods):
    act_order = "and the same with `--act-order`, " if len(methods) > 2 else ""
    header = " | ".join(f"{m} ppl | {m} cloze acc / acc_norm" for m, _ in methods)
    return (f"{SECTION} (PTQ)\n\n"
            "Measured by `python3 scripts/gptq_results.py` on " + cpu + ": for each grid, "
            f"`qkd-train ptq --model {MODEL} --out DIR <grid flags> --method rtn`, "
            f"`... --method gptq {' '.join(CALIB)}` {act_order}then "
            f"`qkd-train eval --model {MODEL} --student DIR --ppl {VAL} --mc {CLOZE} --seq-len 256 --batch-size 16 "
            "--threads 1`. "
            "Calibration: the first 128 windows (256 tokens each) of the training stream tiny-kjv.json describes "
            "(kjv-train.u16, shuffled with its seed); damping 0.01, block size 128; the seven projections of all 6 "
            "layers, min-max range setting (the same for both methods). RTN: teacher 29.429, reference values in "
            "`tests/fixtures/reference/quality.json`.\n\n"
            f"| grid | {header} | GPTQ - RTN ppl |\n|---|" + "---|" * (2 * len(methods) + 1) + "\n" +
            "\n".join(rows) + "\n")


def train_section(rows, verdicts, cpu):
    sets = " ".join(f"--set {s}" for s in TRAIN_COMMON)
    return (f"{SECTION} (KD-QAT start)\n\n"
            "Measured by `python3 scripts/gptq_results.py` on " + cpu + ": "
            f"`qkd-train --config {CONFIG} --set run_dir=DIR <grid overrides> {sets} <init overrides>` with grid "
            "overrides `--set quant.bits=3` (W3 per channel) or `--set quant.bits=2 --set quant.granularity=per_group "
            "--set quant.group_size=32 --set quant.symmetric=false` (W2 g32 asym) and init overrides `--set "
            "student.init=teacher|gptq --set quant.scale_policy=static|dynamic [--set student.gptq_latent=compensated]`. "
            "Equal steps (60 x 4096 tokens) and "
            "lr 1e-3 (scripts/bench_train.py's W3 setting) for every start; student.init gptq calibrates on the first "
            "128 windows of the run's own training stream (student.gptq_* defaults); its latent weights are Q, or with "
            "gptq_latent compensated the values GPTQ rounded (docs/quantization.md). Start ppl is the student before "
            "the first step (baselines.json); final is after the last step. Wall seconds are the trainer's own; the "
            "machine was shared with other jobs while these ran, so they compare only roughly with "
            "scripts/bench_train.py's.\n\n"
            "| grid | start | steps | start ppl | final val ppl | cloze acc / acc_norm | wall s |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + "\n".join(verdicts) + "\n\n"
            "GPTQ's start is the better one at both grids (start ppl), but a better start need not survive 60 steps "
            "of KD-QAT. A likely cause, not measured here: with GPTQ's Q as latent weights every weight sits on a grid "
            "point, half a bin from changing its code, so AdamW's steps of about lr take many steps to move any code, "
            "while round-to-nearest latents spread over their bins. Compensated latents (GPTQ's pre-rounding values) "
            "keep GPTQ's codes but not that spacing, and end closer to (W2 g32) or level with (W3) the RTN start.\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--work", default="runs/gptq-results", help="PTQ students and training runs go here")
    ap.add_argument("--skip-ptq", action="store_true")
    ap.add_argument("--act-order", action="store_true", help="also GPTQ with --act-order in the PTQ table")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-mask", action="store_true", help="skip the main job with and without document masking")
    ap.add_argument("--reuse", action="store_true", help="keep finished evaluations and runs from --work")
    args = ap.parse_args()
    cpu = f"{os.cpu_count()} CPU cores (one thread per process), fp32"
    if not args.skip_ptq:
        methods = PTQ_METHODS + ([ACT_ORDER] if args.act_order else [])
        write_section("docs/quantization-results.md", ptq_section(ptq_rows(args, methods), cpu, methods))
    if not args.skip_train:
        rows, verdicts = train_rows(args)
        write_section("docs/training-results.md", train_section(rows, verdicts, cpu))
        print("\n".join(verdicts))
    if not args.skip_mask:
        write_section("docs/training-results.md", mask_section(*mask_rows(args), cpu), MASK_SECTION)


if __name__ == "__main__":
    main()
