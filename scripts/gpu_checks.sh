#!/bin/bash
# Issue #7's GPU checks in one run, for a machine with an NVIDIA GPU and CuPy, most needed first
# (a lent GPU has little time):
#   1. tests/test_gpu.py: the CUDA kernels against their array versions, every op on the GPU
#      against NumPy, and training steps on the GPU against the CPU
#   2. the README's default training on the GPU (the 10x target: its time against the CPU's),
#      at most TRAIN_S seconds (default 300)
#   3. python benchmarks/bench_vs_torch.py --device cuda: the bench, torch on the GPU beside it
#      when installed (python -m minifrcnn bench --device cuda without it)
#   4. the rest of the test suite with MINIFRCNN_DEVICE=cuda
#   5. with what is left: a profile of the train step from the trained model
# Logs go to $OUT (default gpu-logs/). BUDGET: seconds for the whole script (default 540).
#     BUDGET=540 bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET:-540}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# optional wheels for packages the machine lacks (nbformat for tests/test_exercises.py)
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import cupy, numpy, sys; print('python', sys.version.split()[0], 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
  nproc; } 2>&1 | tee "$OUT/machine.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # scripts/, benchmarks/ import minifrcnn from here
PYTEST="python3 -m pytest -q -p no:cacheprovider -o addopts=-ra"   # no nbval here: tests/ only

echo "== 1. tests/test_gpu.py"
timeout 150 $PYTEST tests/test_gpu.py 2>&1 | tail -40 | tee "$OUT/test_gpu.log"
T=$(( $(left) - 120 )); [ "$T" -gt "${TRAIN_S:-300}" ] && T=${TRAIN_S:-300}
echo "== 2. default training on the GPU ($T s)"
if [ "$T" -gt 60 ]; then
    TIMECMD=""; [ -x /usr/bin/time ] && TIMECMD="/usr/bin/time -v"
    $TIMECMD timeout "$T" python3 -m minifrcnn train --dataset shapes --out /tmp/gpu-run \
        --device cuda --no-progress > "$OUT/train_cuda.log" 2>&1
    tail -45 "$OUT/train_cuda.log"
    cp /tmp/gpu-run/losses.jsonl "$OUT/train_cuda_losses.jsonl"   # a time per iteration, if cut short
fi
echo "== 3. bench (left: $(left) s)"
timeout 240 python3 benchmarks/bench_vs_torch.py --device cuda 2>&1 | tee "$OUT/bench_cuda.log"
T=$(( $(left) - 50 ))
echo "== 4. the rest of the suite on cuda ($T s)"
if [ "$T" -gt 30 ]; then
    MINIFRCNN_DEVICE=cuda timeout "$T" $PYTEST tests --ignore=tests/test_gpu.py 2>&1 \
        | tail -40 | tee "$OUT/suite_cuda.log"
fi
T=$(( $(left) - 5 ))
echo "== 5. profile of a train step from the trained model ($T s)"
if [ "$T" -gt 15 ]; then
    timeout "$T" python3 scripts/profile_train_step.py --device cuda --steps 50 --top 25 \
        --weights data/shapes_model.npz > "$OUT/profile_train_step_cuda.txt" 2>&1
    grep "per train step" "$OUT/profile_train_step_cuda.txt"
fi
echo "== done in $(( $(date +%s) - START )) s"
