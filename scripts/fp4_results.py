#!/usr/bin/env python3
"""Round to nearest (RTN) against KD-QAT at equal steps for the grids students ship in: int4 per channel,
int4 g128, NVFP4 and MXFP4, on the shipped teacher; and the FP4 students' GGUF in llama.cpp beside
qkd-train (#28 item 4).

RTN: `qkd-train ptq --model MODEL --out DIR <grid flags>` then `qkd-train eval` (val ppl on kjv-val.u16,
cloze accuracy on kjv-cloze-val.jsonl), as scripts/gptq_results.py does.
KD-QAT: the main job, `qkd-train --config configs/tiny-kjv.json` (60 steps) with the grid's overrides; its
final evaluation (summary.json).
llama.cpp: each FP4 run's export/gguf/model.gguf through scripts/llama_cpp/compare.mjs (node-llama-cpp
3.21.1): perplexity over the first 16 256-token windows of kjv-val.u16 beside `qkd-train eval --max-windows
16` of the run's student on the same windows, and on those windows the agreement with qkd-train's
own logits (`qkd-train logits` on the run's fp32 hf export): mean |log-prob difference| and argmax agreement.
Writes (or replaces) one section of docs/quantization-results.md and one of docs/training-results.md.
  python3 scripts/fp4_results.py [--binary build/qkd-train] [--work runs/fp4-results] [--reuse] [--grid G ...]
                                [--skip-train G ...]
(--grid measures some grids only, e.g. two processes side by side; then --reuse writes the docs.)
"""
import argparse, array, json, math, os, shutil, struct, subprocess

from gptq_results import CLOZE, CONFIG, MODEL, VAL, evaluate, read_eval, slug, write_section

GRIDS = {  # label: (ptq flags, run overrides)
    "int4 per channel": (["--bits", "4"], []),
    "int4 g128": (["--bits", "4", "--granularity", "per_group", "--group-size", "128"],
                  ["quant.granularity=per_group", "quant.group_size=128"]),
    "NVFP4": (["--quant-format", "nvfp4"], ["quant.format=nvfp4", "quant.granularity=per_group", "quant.group_size=16"]),
    "MXFP4": (["--quant-format", "mxfp4"], ["quant.format=mxfp4", "quant.granularity=per_group", "quant.group_size=32"]),
}
FP4 = ["NVFP4", "MXFP4"]
# No start-of-run baselines: the RTN column is `ptq` of the same grid (the run's step-0 student rounds the same way).
RUN_COMMON = ["train.threads=1", "eval.baselines=false", "export.dtype=float32"]
EXPORTS = {"int": '[]', "fp4": '["hf","gguf"]'}
SEQ = 256
PPL_WINDOWS = 16  # of 184: llama.cpp through node takes about 10 s a window on this machine
AGREEMENT_WINDOWS = 16
PTQ_SECTION = "## RTN in the grids students ship in"
TRAIN_SECTION = "## KD-QAT in the grids students ship in"


ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD, **kw)


def ptq_rows(args):
    rows, rtn = [], {}
    for grid in args.grids:
        flags = GRIDS[grid][0]
        out = os.path.join(args.work, "ptq", slug(grid))
        result = out + ".eval.json"
        if not (args.reuse and os.path.exists(result)):
            shutil.rmtree(out, ignore_errors=True)
            run([args.binary, "ptq", "--model", MODEL, "--out", out] + flags)
            evaluate(args.binary, out, result)
        rtn[grid] = read_eval(result)
        p, acc, acc_norm = rtn[grid]
        rows.append(f"| {grid} | `{' '.join(flags)}` | {p:.3f} | {acc:.3f} / {acc_norm:.3f} |")
        print(rows[-1], flush=True)
    return rows, rtn


def train(args, grid):
    run_dir = os.path.join(args.work, "train", slug(grid))
    summary_path = os.path.join(run_dir, "summary.json")
    finished = os.path.exists(summary_path) and not json.load(open(summary_path))["interrupted"]
    if not (args.reuse and finished):
        shutil.rmtree(run_dir, ignore_errors=True)
        exports = EXPORTS["fp4" if grid in FP4 else "int"]
        sets = [f"run_dir={run_dir}", f"export.formats={exports}"] + RUN_COMMON + GRIDS[grid][1]
        run([args.binary, "--config", CONFIG] + [a for s in sets for a in ("--set", s)])
    return run_dir


def val_windows():
    tokens = array.array("H")
    tokens.frombytes(open(VAL, "rb").read())
    count = (len(tokens) - 1) // SEQ
    return [list(tokens[w * SEQ:w * SEQ + SEQ + 1]) for w in range(count)]


def write_input_ids(path, windows):
    """A safetensors file holding input_ids_0, int64 [len(windows), SEQ] (the logits command's input)."""
    data = array.array("q", [t for w in windows for t in w[:SEQ]]).tobytes()
    header = json.dumps({"input_ids_0": {"dtype": "I64", "shape": [len(windows), SEQ], "data_offsets": [0, len(data)]}})
    header += " " * ((8 - len(header) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header.encode() + data)


def read_logits(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    info = json.loads(raw[8:8 + n])["logits_0"]
    begin, end = info["data_offsets"]
    values = array.array("f")
    values.frombytes(raw[8 + n + begin:8 + n + end])
    return values, info["shape"]


def qkd_logprobs(args, run_dir, windows):
    """Per window, log p(target) and the argmax at every position, from `qkd-train logits` on the fp32 hf export."""
    work = os.path.join(run_dir, "agreement")
    os.makedirs(work, exist_ok=True)
    write_input_ids(os.path.join(work, "input.safetensors"), windows)
    out = os.path.join(work, "logits.safetensors")
    if os.path.exists(out):
        os.remove(out)
    run([args.binary, "logits", "--model", os.path.join(run_dir, "export", "hf"), "--input",
         os.path.join(work, "input.safetensors"), "--output", out])
    values, (batch, seq, vocab) = read_logits(out)
    result = []
    for b in range(batch):
        lps, argmax = [], []
        for i in range(seq):
            row = values[(b * seq + i) * vocab:(b * seq + i + 1) * vocab]
            top = max(row)
            lse = top + math.log(sum(math.exp(x - top) for x in row))
            lps.append(row[windows[b][i + 1]] - lse)
            argmax.append(max(range(vocab), key=row.__getitem__))
        result.append((lps, argmax))
    return result


def llama_cpp(run_dir, windows):
    request = os.path.join(run_dir, "llama_cpp_request.json")
    json.dump({"evaluate": windows, "vocab_size": 4096, "context_size": SEQ + 1}, open(request, "w"))
    out = subprocess.run(["node", "scripts/llama_cpp/compare.mjs", os.path.join(run_dir, "export", "gguf", "model.gguf"),
                          request], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def qkd_ppl(args, run_dir, windows):
    """qkd-train eval of the run's final student on the first `windows` windows of kjv-val.u16."""
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    out = os.path.join(run_dir, f"eval-{windows}-windows.json")
    run([args.binary, "eval", "--model", MODEL, "--student", summary["last_checkpoint"], "--ppl", VAL, "--seq-len",
         str(SEQ), "--max-windows", str(windows), "--threads", "1", "--json", out])
    return json.load(open(out))["ppl"][os.path.basename(VAL)]


def llama_cpp_row(args, grid, run_dir):
    cached = os.path.join(run_dir, "llama_cpp_row.json")
    if args.reuse and os.path.exists(cached):
        return json.load(open(cached))["row"]
    row = measure_llama_cpp_row(args, grid, run_dir)
    json.dump({"row": row}, open(cached, "w"))
    return row


def measure_llama_cpp_row(args, grid, run_dir):
    windows = val_windows()[:PPL_WINDOWS]
    theirs = llama_cpp(run_dir, windows)["evaluate"]
    nll = -sum(sum(w["logprobs"]) for w in theirs) / (len(windows) * SEQ)
    qkd = qkd_ppl(args, run_dir, len(windows))
    ours = qkd_logprobs(args, run_dir, windows[:AGREEMENT_WINDOWS])
    diffs, same, positions = [], 0, 0
    for (lps, argmax), t in zip(ours, theirs):
        for i in range(SEQ):
            diffs.append(abs(lps[i] - t["logprobs"][i]))
            same += argmax[i] == t["argmax"][i]
            positions += 1
    ppl = math.exp(nll)
    return (f"| {grid} | {qkd:.3f} | {ppl:.3f} | {ppl - qkd:+.3f} | {sum(diffs) / len(diffs):.4f} | "
            f"{max(diffs):.4f} | {100.0 * same / positions:.2f}% ({same}/{positions}) |")


def train_rows(args, rtn):
    rows, gguf_rows, verdicts = [], [], []
    for grid in args.grids:
        if grid in args.skip_train:
            continue
        run_dir = train(args, grid)
        summary = json.load(open(os.path.join(run_dir, "summary.json")))
        ev = summary["final_eval"]
        mc = ev["mc"][os.path.basename(CLOZE)]
        p = ev["ppl"][os.path.basename(VAL)]
        r_ppl, r_acc, r_norm = rtn[grid]
        rows.append(f"| {grid} | {r_ppl:.3f} | {r_acc:.3f} / {r_norm:.3f} | {p:.3f} | "
                    f"{mc['acc']:.3f} / {mc['acc_norm']:.3f} | {p - r_ppl:+.3f} | {summary['wall_seconds']:.0f} |")
        print(rows[-1], flush=True)
        verdicts.append(f"- {grid}: KD-QAT ends {abs(p - r_ppl):.3f} val perplexity "
                        f"{'below' if p < r_ppl else 'ABOVE'} round to nearest ({p:.3f} vs {r_ppl:.3f}).")
        if grid in FP4:
            gguf_rows.append(llama_cpp_row(args, grid, run_dir))
            print(gguf_rows[-1], flush=True)
    return rows, gguf_rows, verdicts


def ptq_section(rows, cpu):
    return (f"{PTQ_SECTION}\n\n"
            "Measured by `python3 scripts/fp4_results.py` on " + cpu + ": for each grid "
            f"`qkd-train ptq --model {MODEL} --out DIR <flags>` (round to nearest, min-max range), then "
            f"`qkd-train eval --model {MODEL} --student DIR --ppl {VAL} --mc {CLOZE} --seq-len 256 --batch-size 16 "
            "--threads 1`. NVFP4: E2M1 values, an E4M3 scale per 16 and the per-tensor fp32 scale; MXFP4: E2M1, an "
            "E8M0 scale per 32 (docs/quantization.md). Teacher: 29.429 (the GPTQ section above).\n\n"
            "| grid | ptq flags | RTN val ppl | RTN cloze acc / acc_norm |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")


def train_section(rows, gguf_rows, verdicts, cpu, skipped):
    sets = " ".join(f"--set {s}" for s in RUN_COMMON)
    untrained = ""
    if skipped:
        untrained = (f"Not trained by this script (`--skip-train`): {', '.join(skipped)}; their RTN rows are in "
                     "docs/quantization-results.md. " +
                     ("The main job as shipped is the int4 per channel run: 29.416 val ppl after the same 60 steps "
                      "in the table at the top of this file (`python3 scripts/bench_train.py`), 0.523 below this "
                      "script's RTN 29.939 (also bench_train.py's RTN PTQ column). "
                      if "int4 per channel" in skipped else "") + "\n\n")
    return (f"{TRAIN_SECTION}\n\n"
            "Measured by `python3 scripts/fp4_results.py` on " + cpu + ": the main job, "
            f"`qkd-train --config {CONFIG} --set run_dir=DIR --set export.formats=[...] {sets} <grid overrides>` "
            "(60 steps of 4 x 4 x 256 tokens, lr 1e-4 cosine, forward KL, as shipped) with the grid overrides "
            "`--set quant.granularity=per_group --set quant.group_size=128` (int4 g128), `--set quant.format=nvfp4 "
            "--set quant.granularity=per_group --set quant.group_size=16` (NVFP4) or `--set quant.format=mxfp4 "
            "--set quant.granularity=per_group --set quant.group_size=32` (MXFP4); int4 per channel is the main job "
            "as shipped. RTN is `ptq` of the same grid evaluated the same way (docs/quantization-results.md, "
            "\"RTN in the grids students ship in\"), the student every run starts from; final is the run's own final "
            "evaluation (summary.json: 184 windows of kjv-val.u16, 1,000 cloze items). Equal steps (60 x 4,096 "
            "tokens) for every grid. Wall seconds are the trainer's own; the four runs went side by side "
            "(`--grid`, then `--reuse` wrote this section) on 2 cores shared with other jobs, so they are far above "
            "the shipped run's 181 s and compare only roughly.\n\n"
            "| grid | RTN val ppl | RTN cloze | KD-QAT final val ppl | KD-QAT cloze | "
            "KD-QAT - RTN ppl | wall s |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" +
            "\n".join(verdicts) + "\n\n" + untrained +
            "The FP4 students' GGUF (written by the run, export.gguf_type auto: MXFP4 / NVFP4 blocks with the "
            "student's own codes and scales) in llama.cpp (node-llama-cpp 3.21.1, CPU; "
            f"`node scripts/llama_cpp/compare.mjs DIR/export/gguf/model.gguf REQUEST`): perplexity over the first "
            f"{PPL_WINDOWS} of the 184 windows of 256 tokens of kjv-val.u16 (the windows qkd-train's eval scores first, "
            f"{PPL_WINDOWS * SEQ:,} positions), beside `qkd-train eval --model " + MODEL + " --student "
            "DIR/checkpoints/step-00000060 --ppl " + VAL + f" --seq-len 256 --max-windows {PPL_WINDOWS} --threads 1` "
            f"on the same windows; and on the first {AGREEMENT_WINDOWS} windows "
            f"({AGREEMENT_WINDOWS * SEQ:,} positions) the log-probability of each next token and the "
            "argmax against qkd-train's own fp32 logits (`qkd-train logits --model DIR/export/hf` on the run's "
            "float32 hf export, the student's weights bitwise). llama.cpp's CPU kernels take the MXFP4 / NVFP4 "
            "dot products against activations rounded to Q8_0 (ggml-cpu's vec_dot_type) and keep the KV cache in "
            "F16, where qkd-train computes in fp32: the differences below include both.\n\n"
            f"| grid | qkd-train ppl, {PPL_WINDOWS} windows | llama.cpp ppl, {PPL_WINDOWS} windows | difference | "
            "mean abs log-prob diff (nats) | max | "
            "argmax agreement |\n|---|---|---|---|---|---|---|\n" + "\n".join(gguf_rows) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/qkd-train")
    ap.add_argument("--work", default="runs/fp4-results", help="PTQ students and training runs go here")
    ap.add_argument("--reuse", action="store_true", help="keep finished evaluations and runs from --work")
    ap.add_argument("--skip-train", action="append", default=[], choices=list(GRIDS),
                    help="no KD-QAT run for this grid (repeatable): RTN only, the docs say so")
    ap.add_argument("--grid", action="append", choices=list(GRIDS),
                    help="measure only these grids (repeatable); the docs are written only when all grids run")
    args = ap.parse_args()
    args.grids = args.grid or list(GRIDS)
    cpu = f"{os.cpu_count()} CPU cores (one thread per process), fp32"
    ptq, rtn = ptq_rows(args)
    if args.grid:  # a partial measurement: the RTN students, then the runs, no docs
        train_rows(args, rtn)
        return
    write_section("docs/quantization-results.md", ptq_section(ptq, cpu), PTQ_SECTION)
    rows, gguf_rows, verdicts = train_rows(args, rtn)
    write_section("docs/training-results.md", train_section(rows, gguf_rows, verdicts, cpu, args.skip_train), TRAIN_SECTION)
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
