#!/bin/bash
# The GPU session's checks in one run (docs/cuda.md), in order of priority, each phase under its own
# time limit and all of them under one budget, so that a phase that fails or hangs cannot eat the time
# of the ones after it:
#   build   configure and build against the PyTorch wheel's CUDA LibTorch, tests on (GoogleTest from the
#           .gpudeps bundle): qkd-train, qkd-bench-random-llama and the test files labelled `cuda`
#   tests   ctest -L cuda: the tests that exercise CUDA paths (tests/unit/test_cuda.cpp)
#   tiny    the main job (configs/tiny-kjv.json) on CUDA in bf16 autocast, and again with the 80 GB
#           recipe's optimizer (bf16 student, bf16-compensated master weights, int8 moments)
#   bench   qkd-train's step against the transformers peer (scripts/bench/peer_step_hf.py) on a
#           LLaMA-2-7B-shaped model with random weights (QKD_GPU_LAYERS of its 32 layers)
#   recipe  the same model's peak memory under configs/llama7b-80gb.json against configs/llama7b.json
#   ranks   (not in the default list) the main job as a 1-rank torchrun job on NCCL, and 2 Gloo ranks
# Every figure goes to files under $OUT (default runs/gpu): summary.log (one line per result),
# results.jsonl (the same as JSON), each phase's log, the runs' metrics.jsonl and summary.json.
#
#   bash scripts/gpu/device_check.sh [build tests tiny bench recipe ranks ...]   (default: build tests tiny bench recipe)
#
# Needs .gpudeps/ (bash scripts/gpu/gpu-deps.sh on the Debian machine, carried along).
# Environment:
#   QKD_DEVICE_BUDGET_S  seconds for all phases together (default 470: 8 minutes less the start)
#   QKD_GPU_LAYERS       decoder layers of the 7B-shaped model (default 8: LLaMA-2-7B's per-layer shapes,
#                        fewer of them so that writing and loading the checkpoint fits the session)
#   QKD_GPU_SHAPES       micro_batch:checkpointing pairs such as "4:1 2:0" (default "4:1")
#   QKD_GPU_FREEZES      freeze policies to bench (default "ov none")
#   QKD_GPU_STEPS        steps per bench run (default 8)
#   QKD_BUILD_DIR        build directory (default build-cuda)
#   QKD_DEVICE_TESTS     test files to build (default test_cuda)
#   QKD_DEVICE_CHECK_DRY=1  the same phases on the CPU with tiny sizes and the system LibTorch, to find
#                        script and build errors before a GPU session: no .gpudeps, no wheel, no
#                        nvidia-smi; the peer runs only where python3 has torch and transformers.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
out=${OUT:-runs/gpu}
mkdir -p "$out" runs
stages=${*:-build tests tiny bench recipe}
dry=${QKD_DEVICE_CHECK_DRY:-0}
budget=${QKD_DEVICE_BUDGET_S:-470}
layers=${QKD_GPU_LAYERS:-8}
shapes=${QKD_GPU_SHAPES:-"4:1"}
freezes=${QKD_GPU_FREEZES:-"ov none"}
steps=${QKD_GPU_STEPS:-8}
bdir=${QKD_BUILD_DIR:-build-cuda}
device=cuda seq=2048 hidden=4096 inter=11008 heads=32 vocab=32000
if [ "$dry" = 1 ]; then
  device=cpu seq=64 hidden=256 inter=688 heads=4 vocab=4096 layers=${QKD_GPU_LAYERS:-2} steps=${QKD_GPU_STEPS:-3}
  shapes=${QKD_GPU_SHAPES:-"1:1"}
fi
model=runs/llama7b-shape-$layers
[ "$dry" = 1 ] && model=runs/devcheck-shape-$layers
[ "$dry" = 1 ] || export LD_LIBRARY_PATH=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
start=$(date +%s)
log() { echo "[$(date +%T)] $*" | tee -a "$out/summary.log"; }
# One JSON object per result line in results.jsonl.
record() { echo "$1" >>"$out/results.jsonl"; }
left() { echo $((budget - ($(date +%s) - start))); }
# A phase's limit: its own, or what is left of the budget if that is less.
limit() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
# Runs "$@" under `timeout` of limit $1; the exit status 124 means the limit was hit.
bounded() {
  local seconds
  seconds=$(limit "$1")
  shift
  [ "$seconds" -gt 5 ] || { log "no time left for: $*"; return 124; }
  timeout -k 10 "$seconds" "$@"
}

build() {
  local prefix="" extra=()
  if [ "$dry" != 1 ]; then
    prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)');$PWD/.gpudeps/usr"
    extra=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_INCLUDE_PATH="$PWD/.gpudeps/usr/include"
      -DCMAKE_LIBRARY_PATH="$PWD/.gpudeps/usr/lib/x86_64-linux-gnu"
      -DGTest_DIR="$PWD/.gpudeps/usr/lib/x86_64-linux-gnu/cmake/GTest")
    [ -f .gpudeps/usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] ||
      { log "no GoogleTest in .gpudeps (bash scripts/gpu/gpu-deps.sh, then carry .gpudeps)"; return 1; }
  fi
  bounded 120 cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DQKD_BUILD_TESTS=ON \
    -DQKD_ONLY_TESTS="${QKD_DEVICE_TESTS:-test_cuda}" "${extra[@]}" >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; log "configure failed"; return 1; }
  local tests_list=${QKD_DEVICE_TESTS:-test_cuda} targets
  read -r -a targets <<<"qkd-train qkd-bench-random-llama ${tests_list//;/ }"
  # -k: every file that fails, not just the first.
  bounded 330 cmake --build "$bdir" -j "$(nproc)" --target "${targets[@]}" -- -k >"$out/build.log" 2>&1
  local rc=$?
  grep -E "error|Error" "$out/build.log" | head -60
  log "build rc=$rc ($(($(date +%s) - start)) s into the budget)"
  record "{\"phase\":\"build\",\"rc\":$rc,\"seconds_into_budget\":$(($(date +%s) - start))}"
  return $rc
}

tests() {
  bounded 150 ctest --test-dir "$bdir" -L cuda --output-on-failure --timeout 120 --output-junit "$PWD/$out/ctest-cuda.xml" \
    >"$out/ctest-cuda.log" 2>&1
  local rc=$?
  log "ctest -L cuda rc=$rc: $(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1)"
  grep -E "Failed|\*\*\*" "$out/ctest-cuda.log" | head -20
  record "{\"phase\":\"tests\",\"rc\":$rc,\"result\":\"$(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1)\"}"
  return $rc
}

# Final val ppl, cloze accuracy and tokens/s of a run from its summary.json, as one JSON object.
run_figures() {
  python3 - "$1" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1] + "/summary.json"))
except (OSError, ValueError) as e:
    print(json.dumps({"error": str(e)[:200]}))
    sys.exit()
print(json.dumps({k: s.get(k) for k in ("final_eval", "tokens_per_second", "peak_rss_mb", "steps_completed")}))
EOF
}

# The main job, name and overrides: on CUDA in full; in a dry run 2 steps on 4 windows.
main_job() {
  local name=$1 run=runs/devcheck-$1
  shift
  local small=()
  local seconds=120
  # Dry: a shrunken job (2 steps of one 64-token window, a few eval windows) under a CPU-sized limit.
  [ "$dry" = 1 ] && small=(--set train.steps=2 --set train.micro_batch=1 --set train.grad_accum=1 --set data.seq_len=64
    --set eval.seq_len=64 --set eval.max_windows=2 --set eval.mc_limit=4 --set eval.baselines=false
    --set 'export.formats=[]') && seconds=300
  rm -rf "$run"
  bounded $seconds "./$bdir/qkd-train" --config configs/tiny-kjv.json --set train.device=$device --set run_dir=$run \
    "$@" "${small[@]}" >"$out/$name.log" 2>&1
  local rc=$?
  cp "$run/metrics.jsonl" "$out/$name-metrics.jsonl" 2>/dev/null
  cp "$run/summary.json" "$out/$name-summary.json" 2>/dev/null
  log "$name rc=$rc $(run_figures "$run")"
  record "{\"phase\":\"tiny\",\"run\":\"$name\",\"rc\":$rc,\"figures\":$(run_figures "$run")}"
  return $rc
}

tiny() {
  local rc=0
  main_job tiny-bf16 --set train.precision=bf16 || rc=1
  main_job tiny-bf16-recipe --set train.precision=bf16 --set teacher.dtype=bfloat16 --set student.dtype=bfloat16 \
    --set optim.master_weights=bf16_compensated --set optim.moment_dtype=int8 || rc=1
  return $rc
}

make_model() {
  [ -f "$model/config.json" ] && return 0
  bounded 150 "./$bdir/qkd-bench-random-llama" --hidden $hidden --intermediate $inter --heads $heads --layers "$layers" \
    --vocab $vocab --max-positions 4096 --dtype float16 --out "$model" >"$out/random-llama.log" 2>&1
  local rc=$?
  log "7B-shaped model, $layers layers (hidden $hidden): rc=$rc $(tail -1 "$out/random-llama.log")"
  return $rc
}

# qkd-train's steps on the 7B-shaped model under `config`; killed once `steps` train records exist (its
# end checkpoint, fp32 master weights and moments included, would take longer to write than the steps).
qkd_steps() {
  local name=$1 config=$2 micro=$3 ckpt=$4 freeze=$5 run=runs/devcheck-$1
  rm -rf "$run"
  local seconds
  seconds=$(limit 150)
  [ "$seconds" -gt 10 ] || { log "$name: no time left"; return 124; }
  "./$bdir/qkd-train" --config "$config" --set teacher.path=$model --set train.device=$device \
    --set run_dir=$run --set data.sources='[{"path":"assets/data/kjv/kjv-train.u16","weight":1.0}]' \
    --set data.seq_len=$seq --set train.micro_batch=$micro --set train.grad_accum=1 \
    --set train.activation_checkpointing=$ckpt --set freeze.policy=$freeze --set train.log_interval=1 \
    --set train.steps=1000 --set eval.ppl='[]' --set eval.mc='[]' --set train.eval_interval=0 \
    --set monitor.enabled=false --set export.formats='[]' --set checkpoint.interval=0 --set train.phase_timing=true \
    --set kd.kd_weight=1.0 --set kd.ce_weight=0.0 >"$out/$name.log" 2>&1 &
  local pid=$! waited=0
  while [ $waited -lt "$seconds" ]; do
    sleep 1
    waited=$((waited + 1))
    kill -0 $pid 2>/dev/null || break
    [ "$(cat "$run/metrics.jsonl" 2>/dev/null | grep -c '"type":"train"')" -ge "$steps" ] && break
  done
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  cp $run/metrics.jsonl "$out/$name.jsonl" 2>/dev/null
  local figures
  figures=$(python3 - "$run/metrics.jsonl" "$out/$name.log" <<'EOF'
import json, re, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
except OSError:
    rows = []
rates = sorted(r["tokens_per_s"] for r in rows[2:])
log = open(sys.argv[2], errors="replace").read()
m = re.search(r"(\d+) trainable parameters", log)
print(json.dumps({"steps": len(rows), "median_tokens_per_s": rates[len(rates) // 2] if rates else None,
                  "peak_mem_mb": max((r["peak_mem_mb"] for r in rows), default=None),
                  "trainable_params": int(m.group(1)) if m else None,
                  "phases": rows[-1].get("phases") if rows else None}))
EOF
)
  log "$name: $figures"
  [ -s "$run/metrics.jsonl" ] || tail -5 "$out/$name.log"
  record "{\"phase\":\"steps\",\"run\":\"$name\",\"config\":\"$config\",\"device\":\"$device\",\"figures\":$figures}"
}

peer_steps() {
  local name=$1 micro=$2 ckpt=$3 freeze=$4 flags=""
  [ "$ckpt" = true ] && flags="$flags --checkpointing"
  [ "$freeze" = ov ] && flags="$flags --ov-freeze"
  if ! python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
    log "$name: skipped (python3 has no CUDA torch with transformers)"
    return 0
  fi
  bounded 150 python3 scripts/bench/peer_step_hf.py --model $model --tokens assets/data/kjv/kjv-train.u16 \
    --micro-batch "$micro" --seq-len $seq --steps "$steps" $flags >"$out/$name.jsonl" 2>"$out/$name.err"
  log "$name rc=$? $(tail -1 "$out/$name.jsonl") $(tail -2 "$out/$name.err" | tr '\n' ' ' | cut -c1-300)"
  record "{\"phase\":\"steps\",\"run\":\"$name\",\"device\":\"$device\",\"figures\":$(tail -1 "$out/$name.jsonl" 2>/dev/null || echo null)}"
}

bench() {
  [ "$dry" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.log"
  make_model || return 1
  for shape in $shapes; do
    local micro=${shape%%:*} ckpt=false
    [ "${shape##*:}" = 1 ] && ckpt=true
    for freeze in $freezes; do
      peer_steps "peer-${micro}x$seq-ckpt$ckpt-$freeze" "$micro" $ckpt $freeze
      qkd_steps "qkd-${micro}x$seq-ckpt$ckpt-$freeze" configs/llama7b.json "$micro" $ckpt $freeze
    done
  done
}

# The 80 GB recipe against configs/llama7b.json (bench's run of the same shape, or its own) on the
# 7B-shaped model: the peak each reaches and the bytes per trainable parameter the recipe removes.
recipe() {
  make_model || return 1
  local shape=${shapes%% *}
  local micro=${shape%%:*} ckpt=false
  [ "${shape##*:}" = 1 ] && ckpt=true
  local base=qkd-${micro}x$seq-ckpt$ckpt-ov
  [ -s "$out/$base.jsonl" ] || qkd_steps "$base" configs/llama7b.json "$micro" $ckpt ov
  qkd_steps "recipe-${micro}x$seq-ckpt$ckpt-ov" configs/llama7b-80gb.json "$micro" $ckpt ov
  local saved
  saved=$(python3 - "$out/results.jsonl" "$base" "recipe-${micro}x$seq-ckpt$ckpt-ov" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("run"):
        rows[r["run"]] = r.get("figures") or {}
a, b = rows.get(sys.argv[2], {}), rows.get(sys.argv[3], {})
if a.get("peak_mem_mb") and b.get("peak_mem_mb") and b.get("trainable_params"):
    mb = a["peak_mem_mb"] - b["peak_mem_mb"]
    print(json.dumps({"baseline_peak_mb": a["peak_mem_mb"], "recipe_peak_mb": b["peak_mem_mb"], "saved_mb": mb,
                      "saved_bytes_per_trainable_parameter": mb * 2 ** 20 / b["trainable_params"]}))
else:
    print(json.dumps({"error": "a run has no peak"}))
EOF
)
  log "recipe vs llama7b.json: $saved"
  record "{\"phase\":\"recipe\",\"figures\":$saved}"
}

# Train losses of two runs of the tiny job, and the first one's replica fingerprints.
compare_runs() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
def losses(run):
    return [json.loads(l)["loss"] for l in open(run + "/metrics.jsonl") if '"type":"train"' in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
s = json.load(open(sys.argv[1] + "/summary.json"))
print(json.dumps({"steps": [len(a), len(b)], "max_loss_diff": max(abs(x - y) for x, y in zip(a, b)),
                  "world_size": s.get("world_size"), "fingerprints": s.get("replica_fingerprints")}))
EOF
}

ranks() {
  local common=(--config configs/tiny-kjv.json --set train.steps=20 --set export.formats='[]' --set eval.mc='[]')
  rm -rf runs/gpu-nccl runs/gpu-plain runs/gpu-gloo2
  bounded 120 python3 -m torch.distributed.run --nproc_per_node 1 --no_python "./$bdir/qkd-train" "${common[@]}" \
    --set train.device=cuda --set run_dir=runs/gpu-nccl >"$out/nccl.log" 2>&1
  log "nccl 1 rank rc=$? $(grep -o 'rank 0 of 1 ([a-z]* backend' "$out/nccl.log" | head -1) $(grep -o 'replicas agree.*' "$out/nccl.log" | head -1)"
  bounded 120 "./$bdir/qkd-train" "${common[@]}" --set train.device=cuda --set run_dir=runs/gpu-plain >"$out/plain.log" 2>&1
  log "nccl 1 rank vs no launcher: rc=$? $(compare_runs runs/gpu-nccl runs/gpu-plain)"
  bounded 120 python3 -m torch.distributed.run --nproc_per_node 2 --no_python "./$bdir/qkd-train" "${common[@]}" \
    --set train.device=cpu --set train.threads=2 --set train.micro_batch=2 --set run_dir=runs/gpu-gloo2 >"$out/gloo2.log" 2>&1
  log "gloo 2 ranks (CPU, LibTorch 2.x) rc=$? $(compare_runs runs/gpu-gloo2 runs/gpu-plain)"
  tail -5 "$out/gloo2.log"
}

log "device check: phases '$stages', budget ${budget}s, $([ "$dry" = 1 ] && echo "DRY (cpu, tiny sizes)" || echo cuda)"
status=0
for stage in $stages; do
  log "== $stage ($(left) s left)"
  $stage || {
    status=1
    log "$stage failed"
    [ "$stage" = build ] && break
  }
done
log "done in $(($(date +%s) - start)) s, status $status"
exit $status
