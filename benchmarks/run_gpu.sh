#!/usr/bin/env bash
# The GPU checks and benchmarks in one go: what the README's GPU figures come from.
#   benchmarks/run_gpu.sh [OUT_DIR]     (default gpu-results/; about 7 minutes on one H200)
# Each part has its own time limit, so one that hangs does not take the others with it.
set -u
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
# every CUDA test: the trainer's (graphs, no host sync, fold lanes) and extraction's (fp16 vs CPU)
timeout 120 python3 -m pytest -q -rs tests/test_cuda_train.py tests/test_encoders.py tests/test_extract.py \
    -k "cuda or fp16 or later_batch" 2>&1 | tee "$out/tests.txt"
timeout 180 python3 benchmarks/train.py --device cuda --profile --steps 40 --parallel "${LANES:-1,5,10}" \
    --processes "${PROCESSES:-5}" 2>&1 | tee "$out/train.txt"
timeout 200 python3 benchmarks/extract.py --device cuda --profile --per-utt-n 150 --budgets 160,400 \
    2>&1 | tee "$out/extract.txt"
