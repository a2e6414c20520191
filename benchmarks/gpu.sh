#!/usr/bin/env bash
# The GPU figures in one go, on a machine with an NVIDIA GPU and the CUDA build of JAX
# (pip install -e ".[test]" "jax[cuda12]"), from the repository root, with ../shared/data beside it:
#
#     bash benchmarks/gpu.sh OUT            # about 10 minutes on one H100
#     bash benchmarks/gpu.sh OUT --smoke    # the same steps, tiny (one femur), on whatever JAX sees
#
# 1. the device (nvidia-smi, jax.devices()) -> OUT/device.txt
# 2. the likelihood benchmark (femur, two 256 x 256 cone-beam views, value and gradient of each likelihood,
#    renders per second) -> OUT/bench/results.json and the printed table
# 3. the tests of the projection, the observations and the inference on the GPU -> OUT/tests.log
# 4. NUTS (4 chains, 1000 draws after 500 warm-up) on two femurs, contours and pixel-area DRRs -> OUT/nuts_*
# 5. many cases at once: bs.infer_batch against bs.infer case by case (32 example cases, 256 px DRRs) -> OUT/batch
# Each step's wall time goes to OUT/steps.txt. Record the figures in docs/benchmarks.md with the device.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash benchmarks/gpu.sh OUT [--smoke]}"
SMOKE="${2:-}"
mkdir -p "$OUT"
: > "$OUT/steps.txt"

step() {  # step NAME COMMAND...: run, log its wall time, stop the script on failure
    local name="$1"; shift
    local t0; t0=$(date +%s)
    echo "== $name: $*"
    "$@"
    echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.txt"
}

if [ "$SMOKE" = "--smoke" ]; then
    REPEATS=1; SIZE=64; CHAINS=2; WARMUP=5; DRAWS=5; CASES=(0); BATCH=2
    TESTS=(tests/test_projection.py -k "sphere_drr_parallel")
else
    REPEATS=20; SIZE=256; CHAINS=4; WARMUP=500; DRAWS=1000; CASES=(0 1); BATCH=32
    TESTS=(tests/test_projection.py tests/test_obs.py tests/test_inference.py tests/test_infer_batch.py)
fi

{
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
    python -c "import jax; print('jax', jax.__version__, jax.devices())"
} | tee "$OUT/device.txt"
if [ "$SMOKE" != "--smoke" ]; then
    python -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 'JAX sees no GPU: install the CUDA build (pip install \"jax[cuda12]\")')"
fi

step bench python benchmarks/bench_likelihood.py --out "$OUT/bench" --repeats "$REPEATS" --size "$SIZE"
step tests python -m pytest -q -p no:benchmark -p no:cacheprovider "${TESTS[@]}" 2>&1 | tee "$OUT/tests.log"
step nuts_contour python experiments/femur_loo.py --methods nuts --obs contour --cases "${CASES[@]}" --size "$SIZE" \
    --chains "$CHAINS" --warmup "$WARMUP" --samples "$DRAWS" --out "$OUT/nuts_contour"
step nuts_drr python experiments/femur_loo.py --methods nuts --obs drr --drr-pixel area --drr-size "$SIZE" \
    --drr-likelihood-faces 4000 --cases "${CASES[@]}" --chains "$CHAINS" --warmup "$WARMUP" --samples "$DRAWS" \
    --out "$OUT/nuts_drr"
step batch python benchmarks/bench_batch.py --obs drr --cases "$BATCH" --size "$SIZE" --batch-size "$BATCH" \
    --out "$OUT/batch"
echo "done: $OUT (steps.txt, device.txt, bench/results.json, tests.log, nuts_*/, batch/)"
