#!/usr/bin/env bash
# One prepared run on a lent GPU machine: the gpu-marked tests, then the GPU benchmarks.
#
#     OUT=/tmp/out bash benchmarks/device_check.sh [tests|bench|parity|flow|studies|all]
#
# tests: the gpu-marked tests but the device parity ones; bench: the CNN step on the device (issue 7's
# open target) and its primitives; parity: tests/test_device_parity.py (274 cases of public routines on CuPy
# against numpy, so far run only on the fake device of tests/fake_device.py; each compiles its own
# kernels on a fresh machine: after bench in "all"); flow: the particle flow step and the CPU
# reference step (measured in session 2, not repeated by default).
#
# The machine has CuPy, PyTorch, scipy and pytest but not POT or array-api-compat: wheels for
# those travel in .whl/ (excluded from git; README's GPU paragraph has the pip download line) and are
# installed under /tmp/site.
# Every step has its own time limit and writes its log under $OUT, so a step that hangs or fails
# leaves the others' results.
set -u
OUT=${OUT:-/tmp/shallow-device}
mkdir -p "$OUT"
what=${1:-all}
if [ -z "${SKIP_WHEELS:-}" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, report the status
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s"
    tail -n "${TAIL:-15}" "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import numpy, scipy, cupy, torch; print('numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"
python3 -c "from shallow import backend; print('shallow sees a GPU:', backend.gpu_available())"

if [ "$what" = tests ] || [ "$what" = all ]; then
    TAIL=25 step gpu_tests 200 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" --durations=5 \
        --continue-on-collection-errors --ignore=tests/test_device_parity.py
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    # the headline ratios first, then where the time goes
    step cnn_step_gpu_b1024 150 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --batch 1024 --capture
    step cnn_step_gpu 150 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --capture
    step cnn_layers_gpu 60 python3 benchmarks/cnn_layers.py --device gpu --batch 1024
    step primitives_gpu 90 python3 benchmarks/device_primitives.py --device gpu --batch 1024
    SHALLOW_FUSED_KERNELS=1 step cnn_step_gpu_fused 120 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20
    SHALLOW_FUSED_KERNELS=1 step cnn_step_gpu_b1024_fused 120 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --batch 1024
    step cnn_step_gpu_b1024_tf32 120 python3 benchmarks/cnn_step.py --device gpu --rounds 1 --steps 20 --batch 1024 --tf32
fi
if [ "$what" = parity ] || [ "$what" = all ]; then
    TAIL=25 step gpu_parity 180 python3 -m pytest tests/test_device_parity.py -m gpu -q -p no:cacheprovider \
        -o addopts="" --durations=5
fi
if [ "$what" = flow ]; then
    step flow_step_f64 45 python3 benchmarks/flow_step.py --device gpu --dtype float64 --n 16384 --m 16384 --d 128
    step flow_step_f32 45 python3 benchmarks/flow_step.py --device gpu --dtype float32 --n 16384 --m 16384 --d 128
    step cnn_step_cpu_b1024 120 python3 benchmarks/cnn_step.py --device cpu --rounds 1 --warmup 1 --steps 3 --batch 1024
fi
if [ "$what" = studies ] || [ "$what" = all ]; then
    for name in ${STUDIES:-global_convergence cnn_lazy_vs_meanfield scattering_stability}; do
        step "study_$name" 90 python3 -m shallow.cli run "$name" --quick --device gpu --out /tmp/shallow-studies --workers 1
    done
fi
