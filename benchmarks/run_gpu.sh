#!/usr/bin/env bash
# The GPU checks and benchmarks in one go: what the README's GPU figures come from.
#   benchmarks/run_gpu.sh [OUT_DIR]     (default gpu-results/; about 5 minutes on one H200)
# PARTS picks parts (default "tests train run extract"; "layers" too on request); TRAIN_ARGS adds options to
# benchmarks/train.py (e.g. "--profile"). Each part has its own time limit, so one that hangs
# does not take the others with it.
set -u
out=${1:-gpu-results}
parts=${PARTS:-tests train run extract}
cache=${CACHE:-/tmp/swrr-synthetic-iemocap.h5}  # made by the train part, reused by the run part
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
if [[ $parts == *tests* ]]; then  # every CUDA test: trainer (graphs, no host sync, lanes), extraction (fp16)
    timeout 120 python3 -m pytest -q -rs tests/test_cuda_train.py tests/test_encoders.py tests/test_extract.py \
        -k "cuda or fp16" 2>&1 | tee "$out/tests.txt"
fi
if [[ $parts == *train* ]]; then
    timeout 200 python3 benchmarks/train.py --device cuda --steps 40 --parallel "${LANES:-1,4,10}" \
        --processes "${PROCESSES:-5}" --cache "$cache" ${TRAIN_ARGS:-} 2>&1 | tee "$out/train.txt"
fi
if [[ $parts == *run* ]]; then  # a real swrr-train run: 10 LOSO folds as 10 lanes, 2 epochs
    start=$SECONDS
    timeout 150 python3 -m swrr.train.cli --cache "$cache" --epochs 2 --parallel-folds 10 --no-progress \
        --runs-dir /tmp/swrr-runs --name lanes10 2>&1 | tee "$out/run.txt"
    echo "swrr-train wall time: $((SECONDS - start)) s" | tee -a "$out/run.txt"
fi
if [[ $parts == *extract* ]]; then
    timeout 200 python3 benchmarks/extract.py --device cuda --profile --per-utt-n 150 --budgets 160,400 \
        2>&1 | tee "$out/extract.txt"
fi
if [[ $parts == *layers* ]]; then  # issue 19: 1 vs 13 hidden states (cache size, reads, training); not in the default parts
    timeout 400 python3 benchmarks/layers.py --device cuda --rows "${LAYER_ROWS:-1024}" 2>&1 | tee "$out/layers.txt"
fi
