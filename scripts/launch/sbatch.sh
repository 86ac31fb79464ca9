#!/bin/bash
# SLURM batch job: one qkd-train task per GPU across the allocation. qkd-train reads SLURM_PROCID,
# SLURM_NTASKS and SLURM_LOCALID itself and meets rank 0 on the job's first host (MASTER_ADDR below).
#   sbatch scripts/launch/sbatch.sh configs/llama7b.json [--set key=value ...]
#SBATCH --job-name=qkd-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --output=qkd-train-%j.log
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch scripts/launch/sbatch.sh CONFIG [--set key=value ...]" >&2; exit 2; }
config=$1
shift
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 1000))}
# A run stopped by the time limit checkpoints on SIGTERM; resubmitting the same job resumes it.
srun --kill-on-bad-exit=1 "${QKD_TRAIN:-build/qkd-train}" --config "$config" "$@"
