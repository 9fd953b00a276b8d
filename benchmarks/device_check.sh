#!/usr/bin/env bash
# One prepared run on a lent GPU machine: the gpu-marked tests, then the GPU benchmarks.
#
#     OUT=/tmp/out bash benchmarks/device_check.sh [STEP...]
#
# STEP: cuda, tests, bench, profile, parity, flow, studies, or all (cuda bench tests parity profile
# studies, the default). Several steps run in one call, in the order given: put first what matters most.
# cuda: only the tests marked `cuda` (fused kernels, CUDA graphs, the cuBLAS handle: the code that the
# fake device cannot run, a dozen tests), the first thing to run when device time is short.
# tests: the gpu-marked tests but the device parity ones; bench: the CNN step on the device against
# PyTorch (issue 7's open target), plain and captured, at batch 128 and 1024; profile: where that
# step's time goes (per layer, the split reductions) and its variants (fused batch norm, TF32 PyTorch);
# parity: tests/test_device_parity.py (285 cases of public routines on CuPy against numpy, each
# compiling its own kernels on a fresh machine); flow: the particle flow step and the CPU reference
# step (measured in session 2, not repeated by default).
#
# The machine has CuPy, PyTorch, scipy and pytest but not POT or array-api-compat: wheels for
# those travel in .whl/ (excluded from git; README's GPU paragraph has the pip download line) and are
# installed under /tmp/site.
# Every command has its own time limit and appends its output to the log of its step, $OUT/STEP.log
# (one file per step: the lent machine returns at most 8 files from $OUT), so a command that hangs or
# fails leaves the others' results.
set -u
OUT=${OUT:-/tmp/shallow-device}
mkdir -p "$OUT"
steps=${*:-all}
[ "$steps" = all ] && steps="cuda bench tests parity profile studies"
for what in $steps; do
    case $what in
        cuda|tests|bench|profile|parity|flow|studies) ;;
        *) echo "unknown step '$what': expected cuda, tests, bench, profile, parity, flow, studies or all"; exit 2 ;;
    esac
done
if [ -z "${SKIP_WHEELS:-}" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# shallow.backend.get_xp needs array-api-compat for CuPy arrays: without it every device test fails
python3 -c "import array_api_compat" 2>/dev/null \
    || { echo "array-api-compat is missing: carry .whl (README's GPU paragraph) with the run"; exit 1; }

step() {  # step STEP NAME SECONDS COMMAND...: run with a limit, append to $OUT/STEP.log, report the status
    local log=$OUT/$1.log name=$2 limit=$3; shift 3
    local start=$SECONDS
    echo "== $name: $*" >>"$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s" | tee -a "$log"
    tail -n "$((${TAIL:-15} + 1))" "$log" | head -n "${TAIL:-15}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import numpy, scipy, cupy, torch; print('numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"
python3 -c "from shallow import backend; print('shallow sees a GPU:', backend.gpu_available())"

run_step() {
    case $1 in
    cuda)
        TAIL=25 step cuda cuda_tests 150 python3 -m pytest -m "gpu and cuda" -q -p no:cacheprovider -o addopts="" \
            --durations=5 --continue-on-collection-errors --ignore=tests/test_device_parity.py ;;
    tests)
        TAIL=25 step tests gpu_tests 200 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" --durations=5 \
            --continue-on-collection-errors --ignore=tests/test_device_parity.py ;;
    bench)  # the headline ratios (issue 7's target is batch 128)
        step bench cnn_step_gpu 150 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --capture
        step bench cnn_step_gpu_b1024 150 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --batch 1024 --capture ;;
    profile)  # where the time goes, and the variants
        step profile cnn_layers_gpu 60 python3 benchmarks/cnn_layers.py --device gpu --batch 128
        step profile primitives_gpu 90 python3 benchmarks/device_primitives.py --device gpu --batch 1024
        SHALLOW_FUSED_KERNELS=1 step profile cnn_step_gpu_fused 120 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --capture
        step profile cnn_step_gpu_b1024_tf32 120 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --batch 1024 --tf32 ;;
    parity)
        TAIL=25 step parity gpu_parity 180 python3 -m pytest tests/test_device_parity.py -m gpu -q -p no:cacheprovider \
            -o addopts="" --durations=5 ;;
    flow)
        step flow flow_step_f64 45 python3 benchmarks/flow_step.py --device gpu --dtype float64 --n 16384 --m 16384 --d 128
        step flow flow_step_f32 45 python3 benchmarks/flow_step.py --device gpu --dtype float32 --n 16384 --m 16384 --d 128
        step flow cnn_step_cpu_b1024 120 python3 benchmarks/cnn_step.py --device cpu --rounds 1 --warmup 1 --steps 3 --batch 1024 ;;
    studies)
        for name in ${STUDIES:-global_convergence cnn_lazy_vs_meanfield scattering_stability}; do
            step studies "study_$name" 90 python3 -m shallow.cli run "$name" --quick --device gpu --out /tmp/shallow-studies --workers 1
        done ;;
    esac
}
for what in $steps; do run_step "$what"; done
