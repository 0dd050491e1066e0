#!/usr/bin/env bash
# One-shot accelerator check, for a machine with a GPU and no network (JAX with CUDA, Flax,
# Equinox and PyTorch installed), in under 8 minutes:
#   1. the test suite on the accelerator, the cpu_only tests skipped (they need 8 virtual
#      CPU devices or test a CPU formulation), float32 matmuls exact (tests/conftest.py);
#   2. the step benchmarks (benchmarks/compare.py) of minitorch, raw JAX, Flax, Equinox and
#      PyTorch eager, PyTorch on CUDA too, for the small MLP, the CNN and the gpt workload;
#   3. both written into the file $RESULTS (default benchmarks/RESULTS.md), between the
#      accelerator-tests and accelerator markers, with the chart beside it.
#
# Run from anywhere:  bash benchmarks/accelerator_check.sh
# Settings (environment): PYTHON (python3), RESULTS, CHECK_TESTS (pytest arguments; default
# the whole suite), CHECK_WORKERS (pytest-xdist processes, default 4; 0: one process),
# CHECK_WORKLOADS, CHECK_IMPLS, CHECK_ROUNDS (5), TEST_SECONDS (270), BENCH_SECONDS (180). On a machine without an accelerator it stops, unless given
# --allow-cpu (how the script itself is tested: tests/test_benchmarks.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/RESULTS.md}
CHECK_WORKLOADS=${CHECK_WORKLOADS:-small cnn gpt}
CHECK_IMPLS=${CHECK_IMPLS:-minitorch|raw JAX|Flax linen|Flax NNX|Equinox|PyTorch eager}
CHECK_ROUNDS=${CHECK_ROUNDS:-5}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several test workers share one GPU's memory
started=$(date +%s)

backend=$("$PYTHON" -c "import jax; print(jax.default_backend())") || {
    echo "accelerator_check: jax does not import"; exit 2; }
if [ "$backend" = cpu ] && [ "${1:-}" != "--allow-cpu" ]; then
    echo "accelerator_check: JAX's backend is the CPU: no accelerator here (--allow-cpu runs anyway)"
    exit 2
fi
"$PYTHON" - <<'PY'
import importlib.metadata as m
import jax
print("accelerator_check:", jax.default_backend(), jax.devices())
for name in ("jax", "jaxlib", "optax", "chex", "flax", "equinox", "torch", "pytest",
             "pytest-xdist", "hypothesis", "safetensors"):
    try:
        print(f"  {name} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"  {name}: not installed")
PY

# 1. the test suite, cpu_only tests skipped
workers=()
if [ "${CHECK_WORKERS:-4}" != 0 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
    workers=(-n "${CHECK_WORKERS:-4}")
fi
read -r -a tests <<< "${CHECK_TESTS:-}"
log=$(mktemp)
timeout "${TEST_SECONDS:-270}" "$PYTHON" -m pytest -q -p no:cacheprovider "${workers[@]}" \
    -m "not cpu_only" "${tests[@]}" 2>&1 | tee "$log" | tail -25
test_status=${PIPESTATUS[0]}
summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s" "$log" | tail -1)
[ "$test_status" = 124 ] && summary="stopped after ${TEST_SECONDS:-270} s: $summary"
"$PYTHON" - "$RESULTS" "$backend" "$test_status" "$summary" <<'PY'
import datetime, sys
import jax
sys.path.insert(0, ".")
from benchmarks.compare import write_section
path, backend, status, summary = sys.argv[1:]
device = jax.devices()[0].device_kind
write_section([f"Test suite on {backend} ({device}), cpu_only tests skipped, "
               f"{datetime.date.today()}: exit status {status}; {summary or 'no summary'}."],
              __import__("pathlib").Path(path), "accelerator-tests")
PY

# 2. the step benchmarks against the peers, on the accelerator
IFS='|' read -r -a impls <<< "$CHECK_IMPLS"
read -r -a workloads <<< "$CHECK_WORKLOADS"
timeout "${BENCH_SECONDS:-180}" "$PYTHON" benchmarks/compare.py --rounds "$CHECK_ROUNDS" \
    --workloads "${workloads[@]}" --impls "${impls[@]}" --compile-repeats 1 \
    --import-rounds 0 --section accelerator --results "$RESULTS" | tail -30
bench_status=${PIPESTATUS[0]}
echo "accelerator_check: tests exit $test_status, benchmarks exit $bench_status," \
     "$(( $(date +%s) - started )) s in all; results in $RESULTS"
[ "$test_status" = 0 ] && [ "$bench_status" = 0 ]
