#!/bin/bash
# The GPU session's checks in one run (docs/cuda.md): build against the PyTorch wheel's CUDA LibTorch,
# run the main job on CUDA, then time qkd-train's step against the transformers peer
# (scripts/bench/peer_step_hf.py) on a LLaMA-2-7B-shaped model with random weights.
# Needs .gpudeps/ (bash scripts/gpu/gpu-deps.sh on the Debian machine, carried along).
#   bash scripts/gpu/device_check.sh [build|tiny|bench|ranks ...]   (default: build tiny bench; logs under $OUT
#   or runs/gpu). ranks: the main job as a 1-rank torchrun job on NCCL against the same job without a
#   launcher, and 2 Gloo ranks on the host CPU.
# Environment: QKD_GPU_LAYERS (decoder layers of the 7B-shaped model, default 8: the per-layer shapes
# of LLaMA-2-7B, fewer of them so that writing and loading the checkpoint fits the session),
# QKD_GPU_SHAPES (micro_batch:checkpointing pairs such as "4:1 2:0", default "4:1"), QKD_GPU_STEPS (default 8).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu}
mkdir -p "$out" runs
stages=${*:-build tiny bench}
layers=${QKD_GPU_LAYERS:-8}
shapes=${QKD_GPU_SHAPES:-"4:1"}
steps=${QKD_GPU_STEPS:-8}
export LD_LIBRARY_PATH=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
log() { echo "[$(date +%T)] $*" | tee -a "$out/summary.log"; }

build() {
  local tp
  tp=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DQKD_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$tp;$PWD/.gpudeps/usr" \
        -DCMAKE_INCLUDE_PATH="$PWD/.gpudeps/usr/include" \
        -DCMAKE_LIBRARY_PATH="$PWD/.gpudeps/usr/lib/x86_64-linux-gnu" >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; return 1; }
  # -k: every file that fails, not just the first.
  cmake --build build-cuda -j "$(nproc)" ${QKD_GPU_TARGET:+--target $QKD_GPU_TARGET} -- -k >"$out/build.log" 2>&1
  local rc=$?
  grep -E "error|Error" "$out/build.log" | head -60
  log "build rc=$rc"
  return $rc
}

tiny() {
  local run=runs/gpu-tiny
  rm -rf "$run"
  ./build-cuda/qkd-train --config configs/tiny-kjv.json --set train.device=cuda --set run_dir=$run \
    >"$out/tiny.log" 2>&1
  log "tiny fp32 rc=$? $(python3 -c "import json;s=json.load(open('$run/summary.json'));print(json.dumps({k:s.get(k) for k in ('final_eval','tokens_per_second','exported')}))" 2>&1)"
  cp $run/metrics.jsonl "$out/tiny-metrics.jsonl" 2>/dev/null
  rm -rf $run-bf16
  ./build-cuda/qkd-train --config configs/tiny-kjv.json --set train.device=cuda --set train.precision=bf16 \
    --set run_dir=$run-bf16 --set train.steps=20 --set export.formats='["hf","packed","gguf"]' >"$out/tiny-bf16.log" 2>&1
  log "tiny bf16 rc=$? $(python3 -c "import json;s=json.load(open('$run-bf16/summary.json'));print(json.dumps({k:s.get(k) for k in ('final_eval','tokens_per_second','exported')}))" 2>&1)"
}

# qkd-train's steps on the 7B-shaped model; killed once `steps` train records exist (its end
# checkpoint, fp32 master weights and moments included, would take longer to write than the steps).
qkd_steps() {
  local name=$1 micro=$2 ckpt=$3 freeze=$4 run=runs/gpu-bench-$1
  rm -rf "$run"
  ./build-cuda/qkd-train --config configs/llama7b.json --set teacher.path=runs/llama7b-shape \
    --set run_dir=$run --set data.sources='[{"path":"assets/data/kjv/kjv-train.u16","weight":1.0}]' \
    --set train.micro_batch=$micro --set train.grad_accum=1 --set train.activation_checkpointing=$ckpt \
    --set freeze.policy=$freeze --set train.log_interval=1 --set train.steps=1000 --set eval.ppl='[]' \
    --set eval.mc='[]' --set train.eval_interval=0 --set monitor.enabled=false --set export.formats='[]' \
    --set checkpoint.interval=0 --set train.phase_timing=true --set kd.kd_weight=1.0 --set kd.ce_weight=0.0 >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 240); do
    sleep 1
    kill -0 $pid 2>/dev/null || break
    [ "$(grep -c '"type":"train"' $run/metrics.jsonl 2>/dev/null)" -ge "$steps" ] && break
  done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  cp $run/metrics.jsonl "$out/$name.jsonl" 2>/dev/null
  log "$name: $(python3 - "$run/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
rates = sorted(r["tokens_per_s"] for r in rows[2:])
print(json.dumps({"steps": len(rows), "median_tokens_per_s": rates[len(rates) // 2] if rates else None,
                  "peak_mem_mb": max((r["peak_mem_mb"] for r in rows), default=None),
                  "phases": rows[-1].get("phases") if rows else None}))
EOF
)"
}

peer_steps() {
  local name=$1 micro=$2 ckpt=$3 freeze=$4 flags=""
  [ "$ckpt" = true ] && flags="$flags --checkpointing"
  [ "$freeze" = ov ] && flags="$flags --ov-freeze"
  timeout 300 python3 scripts/bench/peer_step_hf.py --model runs/llama7b-shape --tokens assets/data/kjv/kjv-train.u16 \
    --micro-batch "$micro" --seq-len 2048 --steps "$steps" $flags >"$out/$name.jsonl" 2>"$out/$name.err"
  log "$name rc=$? $(tail -1 "$out/$name.jsonl") $(tail -2 "$out/$name.err" | tr '\n' ' ' | cut -c1-300)"
}

bench() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.log"
  [ -f runs/llama7b-shape/config.json ] ||
    ./build-cuda/qkd-bench-random-llama --hidden 4096 --intermediate 11008 --heads 32 --layers "$layers" \
      --vocab 32000 --max-positions 4096 --dtype float16 --out runs/llama7b-shape >"$out/random-llama.log" 2>&1
  log "7B-shaped model, $layers layers: $(tail -1 "$out/random-llama.log")"
  for shape in $shapes; do
    local micro=${shape%%:*} ckpt=false
    [ "${shape##*:}" = 1 ] && ckpt=true
    for freeze in ov none; do
      peer_steps "peer-${micro}x2048-ckpt$ckpt-$freeze" "$micro" $ckpt $freeze
      qkd_steps "qkd-${micro}x2048-ckpt$ckpt-$freeze" "$micro" $ckpt $freeze
    done
  done
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
  python3 -m torch.distributed.run --nproc_per_node 1 --no_python ./build-cuda/qkd-train "${common[@]}" \
    --set train.device=cuda --set run_dir=runs/gpu-nccl >"$out/nccl.log" 2>&1
  log "nccl 1 rank rc=$? $(grep -o 'rank 0 of 1 ([a-z]* backend' "$out/nccl.log" | head -1) $(grep -o 'replicas agree.*' "$out/nccl.log" | head -1)"
  ./build-cuda/qkd-train "${common[@]}" --set train.device=cuda --set run_dir=runs/gpu-plain >"$out/plain.log" 2>&1
  log "nccl 1 rank vs no launcher: rc=$? $(compare_runs runs/gpu-nccl runs/gpu-plain)"
  python3 -m torch.distributed.run --nproc_per_node 2 --no_python ./build-cuda/qkd-train "${common[@]}" \
    --set train.device=cpu --set train.threads=2 --set train.micro_batch=2 --set run_dir=runs/gpu-gloo2 >"$out/gloo2.log" 2>&1
  log "gloo 2 ranks (CPU, LibTorch 2.x) rc=$? $(compare_runs runs/gpu-gloo2 runs/gpu-plain)"
  tail -5 "$out/gloo2.log"
}

for stage in $stages; do
  log "== $stage"
  $stage || { log "$stage failed"; [ "$stage" = build ] && exit 1; }
done
