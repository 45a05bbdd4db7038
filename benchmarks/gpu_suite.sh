#!/usr/bin/env bash
# docs/hardware.md's GPU figures in one go, on random weights of SD1.5's shape (no download): RL (DDPO) at 512 px
# and 50 steps in fp16 and bf16, face-LoRA training steps at 512 px in both, and portrait vs generate. Meant for a
# short lease of an NVIDIA machine: every phase has its own time limit, and each writes its JSON as soon as it ends.
# About 9 minutes on an H200 (the checkpoint alone takes 1).
# usage: benchmarks/gpu_suite.sh OUTDIR        (MODEL=demo DEVICE=cpu STEPS=4 for a dry run on a CPU)
set -u
out=${1:?usage: benchmarks/gpu_suite.sh OUTDIR}
mkdir -p "$out"
py=${PYTHON:-python3} device=${DEVICE:-cuda} steps=${STEPS:-50} model=${MODEL:-sd15}
log="$out/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
if [ "$model" = sd15 ]; then  # written once, shared by every phase
  start=$SECONDS
  model=$("$py" tests/ldm_checkpoint.py "$(mktemp -d)" 2>>"$log" | tail -1) || { echo "checkpoint failed"; exit 1; }
  echo "checkpoint written in $((SECONDS - start)) s" | tee -a "$log"
fi
phase() {
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name" >>"$log"
  timeout "$limit" "$py" "$@" >"$out/$name.json" 2>>"$log"
  echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$log"
}
phase ddpo "${DDPO_LIMIT:-260}" benchmarks/ddpo.py --model "$model" --steps "$steps" --epochs 2 --precisions fp16,bf16 --device "$device"
for p in fp16 bf16; do
  phase "train_$p" "${TRAIN_LIMIT:-55}" benchmarks/train_lora.py --model "$model" --precision "$p" --steps 10
done
phase portrait "${PORTRAIT_LIMIT:-110}" benchmarks/portrait.py --model "$model" --steps 25 --runs 2
