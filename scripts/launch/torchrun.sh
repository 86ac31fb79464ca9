#!/bin/bash
# Data-parallel KD-QAT on one host with torchrun: NPROC ranks of qkd-train train one student, each on its
# own GPU (train.device cuda: rank r binds GPU LOCAL_RANK) or, with train.device cpu, on the CPU over
# Gloo. train.micro_batch is per rank: the global batch is micro_batch x grad_accum x NPROC windows.
#   bash scripts/launch/torchrun.sh CONFIG NPROC [--set key=value ...]
# e.g. bash scripts/launch/torchrun.sh configs/llama7b.json 8
#      bash scripts/launch/torchrun.sh configs/tiny-kjv.json 2 --set train.micro_batch=2 --set train.threads=1
# Several hosts: run the same torchrun on each with --nnodes N --node-rank R --rdzv-endpoint HOST:PORT.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash scripts/launch/torchrun.sh CONFIG NPROC [--set key=value ...]" >&2; exit 2; }
config=$1 nproc=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
binary=${QKD_TRAIN:-$root/build/qkd-train}
if command -v torchrun >/dev/null 2>&1; then launcher=(torchrun); else launcher=(python3 -m torch.distributed.run); fi
exec "${launcher[@]}" --standalone --nproc_per_node "$nproc" --no_python "$binary" --config "$config" "$@"
