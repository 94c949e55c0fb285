#!/usr/bin/env bash
# The GPU check (issue 14) in one command, for a machine with a CUDA GPU and the project's
# GPU image (jax 0.11 CUDA, Python 3.12, transformers 5.x, no network). docs/gpu.md says more.
#
#   bash benchmarks/gpu_check.sh [all|setup|tests|bench|tropical]        (default: all)
#
# Before: `bash benchmarks/fetch_gpu_wheels.sh` on a machine with PyPI (fills .whl/), then carry
# .whl with the working tree. Stages, each bounded by its own time budget:
#   setup     install the carried wheels (transformers 4.57.6, tokenizers 0.22.2,
#             huggingface_hub 0.36.2) into /tmp/site, the package with `pip install -e`, print
#             versions and nvidia-smi (env_gpu.txt)
#   tests     the GPU correctness subset (pytest; matmuls at full float32, not TF32)
#   bench     benchmarks/bench_bert.py per batch size (64, 512, 1), merged after each batch into
#             results_gpu.json + results_gpu.md
#   tropical  benchmarks/bench_tropical.py: XLA vs Pallas (tile sweep) vs a HIGHEST matmul
# Results go to $OUT (default out/gpu_check): gpu_check.log, env_gpu.txt, pytest_gpu.log,
# pytest_gpu.xml, results_gpu.json, results_gpu.md, tropical_gpu.json. Every stage runs even if
# an earlier one failed (setup excepted); the last lines say which failed, and the exit code is 1.
#
# Environment: OUT; PYTHON (default python3); GPU_CHECK_DRY_RUN=1 (CPU rehearsal: the same
# steps at tiny sizes, nothing installed, no nvidia-smi); GPU_CHECK_TESTS_S, GPU_CHECK_BENCH_S,
# GPU_CHECK_TROPICAL_S (stage budgets, seconds); GPU_CHECK_TESTS (pytest arguments instead of
# the default subset, split at spaces: test ids, no quoting); GPU_CHECK_BATCHES (default "64 512 1"); GPU_CHECK_METHODS (bench_bert
# --methods, default all); GPU_CHECK_WORKERS (pytest-xdist workers, default 8);
# GPU_CHECK_SWEEP (none|quick|full Pallas tiles); GPU_CHECK_TROPICAL_SHAPES (BxMxCxN,...);
# GPU_CHECK_PREVIOUS (an earlier results_gpu.json that the bench stage adds its batches to).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAGE=${1:-all}
case "$STAGE" in all|setup|tests|bench|tropical) ;; *)
  echo "gpu_check: unknown stage '$STAGE': use all, setup, tests, bench or tropical" >&2; exit 2;; esac
DRY=${GPU_CHECK_DRY_RUN:-0}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT" || { echo "gpu_check: cannot create OUT=$OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE=$!
# let tee write the last lines before the script ends (the device tool reads them)
trap 'exec >&- 2>&-; wait $TEE 2>/dev/null; rm -rf "$WORK"' EXIT
STATUS=()   # "stage: result" lines for the summary

if [ "$STAGE" = all ]; then   # one device call holds at most 10 minutes
  T_TESTS=${GPU_CHECK_TESTS_S:-240}; T_BENCH=${GPU_CHECK_BENCH_S:-260}; T_TROP=${GPU_CHECK_TROPICAL_S:-50}
else
  T_TESTS=${GPU_CHECK_TESTS_S:-540}; T_BENCH=${GPU_CHECK_BENCH_S:-540}; T_TROP=${GPU_CHECK_TROPICAL_S:-540}
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
export USE_TORCH=0 USE_TF=0   # the image's torch is not needed; keep transformers from loading it
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 1 ]; then       # tiny programs: compile time dominates, so compile cheaply
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
fi

say() { echo "== gpu_check $(date +%H:%M:%S) $*"; }
die() { say "FAILED: $*"; echo "gpu_check: FAILED: $*" >&2; exit 1; }

# run NAME BUDGET LOG CMD...: run with a time limit (output to LOG, or here if LOG is -),
# record ok / FAILED / TIMEOUT
run() {
  local name=$1 budget=$2 log=$3 rc; shift 3
  say "$name: start (budget ${budget}s)"
  local t0=$SECONDS
  if [ "$log" = - ]; then timeout --kill-after=15 "$budget" "$@"; rc=$?
  else timeout --kill-after=15 "$budget" "$@" > "$log" 2>&1; rc=$?; fi
  local took=$((SECONDS - t0))
  if [ $rc = 0 ]; then STATUS+=("$name: ok (${took}s)")
  elif [ $rc = 124 ] || [ $rc = 137 ]; then STATUS+=("$name: TIMEOUT after ${took}s (budget ${budget}s)")
  else STATUS+=("$name: FAILED, exit code $rc (${took}s)"); fi
  say "$name: ${STATUS[-1]#*: }"
  return $rc
}

setup() {
  say "setup (dry run: $DRY)"
  if [ "$DRY" = 1 ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
      "$PY" - <<'EOF' || die "the wheels in .whl/ are not the ones the GPU image needs: bash benchmarks/fetch_gpu_wheels.sh"
import glob, zipfile
want = {"transformers": "4.57.6", "tokenizers": "0.22.2", "huggingface_hub": "0.36.2"}
have = {}
for path in glob.glob(".whl/*.whl"):
    name, version = path.split("/")[-1].split("-")[:2]
    assert zipfile.ZipFile(path).testzip() is None, f"{path} is damaged"
    have.setdefault(name, []).append(version)
for name, version in want.items():
    assert have.get(name) == [version], f"{name}: need exactly {version} in .whl/, found {have.get(name)}"
print("wheels ok (not installed in a dry run):", sorted(glob.glob(".whl/*.whl")))
EOF
    else
      say "no .whl/ here (fine for a dry run; on the GPU: bash benchmarks/fetch_gpu_wheels.sh, carry .whl)"
    fi
  else
    ls .whl/*.whl >/dev/null 2>&1 \
      || die "no wheels in .whl/: run 'bash benchmarks/fetch_gpu_wheels.sh' on a machine with PyPI and carry .whl"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || die "pip could not install .whl/*.whl into /tmp/site"
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || say "note: 'pip install -e .' failed; the package is imported from PYTHONPATH=$ROOT"
  fi
  {
    "$PY" - "$DRY" <<'EOF'
import importlib.metadata as md, platform, sys
dry = sys.argv[1] == "1"
print("python", platform.python_version(), sys.executable)
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "transformers",
             "tokenizers", "huggingface_hub", "numba", "numpy", "optax", "equinox", "hypothesis",
             "pytest", "pytest-xdist", "pytest-timeout"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
import jax, transformers
print("jax backend", jax.default_backend(), jax.devices())
from transformers import FlaxBertForMaskedLM  # noqa: F401  (fails on transformers 5.x)
import jax.experimental.pallas  # noqa: F401
import jaxpr_semiring
print("jaxpr_semiring from", jaxpr_semiring.__file__)
assert transformers.__version__.startswith("4."), f"transformers {transformers.__version__}: need 4.57.6 (5.x has no Flax models)"
assert dry or jax.default_backend() == "gpu", f"no GPU: jax.default_backend() is {jax.default_backend()!r}"
EOF
  } > "$OUT/env_gpu.txt" 2>&1
  local rc=$?
  if [ "$DRY" != 1 ]; then
    { echo; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; } \
      >> "$OUT/env_gpu.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT/env_gpu.txt"
  fi
  cat "$OUT/env_gpu.txt"
  [ $rc = 0 ] || die "the environment is not usable (see env_gpu.txt above)"
  STATUS+=("setup: ok")
}

tests() {
  local args
  if [ -n "${GPU_CHECK_TESTS:-}" ]; then
    read -r -a args <<< "$GPU_CHECK_TESTS"
  elif [ "$DRY" = 1 ]; then
    args=(tests/test_gpu.py::test_pallas_equals_xla tests/test_kernels.py::test_pallas_interpret)
  else
    # Real == jax.grad (63 functions, HF BERT), brute-force path enumeration, scan/cond, every
    # kernel vs the reference, Pallas compiled vs XLA. The MiniLM weights (88 MB) do not travel.
    args=(tests/test_gpu.py tests/test_real_equals_grad.py tests/test_models_real.py
          tests/test_hf_bert_flows.py tests/test_control_flow.py tests/test_kernels.py
          tests/test_semirings_vs_paths.py tests/test_jit_vmap_numerics.py -k "not minilm")
  fi
  local extra=(-p no:cacheprovider -rfEs --durations=15 --junitxml "$OUT/pytest_gpu.xml" -o junit_family=xunit1)
  if [ "$DRY" != 1 ] && "$PY" -c "import xdist" 2>/dev/null; then extra+=(-n "${GPU_CHECK_WORKERS:-8}"); else extra+=(-p no:xdist); fi
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout 180)
  # TF32 is JAX's GPU default for float32 matmuls, and the oracles compare at float32
  # tolerances: full precision here. No preallocation: the pytest workers share the GPU.
  JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
  JAXPR_SEMIRING_GPU_TEST_INTERPRET=$DRY \
    run tests "$T_TESTS" "$OUT/pytest_gpu.log" "$PY" -m pytest -v "${extra[@]}" "${args[@]}"
  local rc=$?
  tail -n 40 "$OUT/pytest_gpu.log"
  return $rc
}

merge_bench() {   # merge_bench PART: fold one batch's bench_bert JSON into results_gpu.json/.md
  "$PY" - "$1" "$OUT/results_gpu.json" "$OUT/results_gpu.md" "$DRY" <<'EOF'
import importlib.metadata as md, json, os, subprocess, sys, tempfile
sys.path.insert(0, "benchmarks")
from bench_bert import markdown
part, dest, table, dry = sys.argv[1:5]
new = json.load(open(part))
rows, meta = new["rows"], new["meta"]
if os.path.exists(dest):
    old = json.load(open(dest))
    fresh = {r["batch"] for r in rows}
    rows = [r for r in old["rows"] if r["batch"] not in fresh] + rows
versions = {}
for name in ("jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "transformers", "numba"):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
if dry != "1":
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True)
    versions["nvidia-smi"] = q.stdout.strip()
meta.update(versions=versions, batches=sorted({r["batch"] for r in rows}),
            matmul_precision=os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "default (TF32 on GPU)"),
            dry_run=dry == "1")
for path, text in ((dest, json.dumps(dict(meta=meta, rows=rows), indent=2)),
                   (table, markdown(meta, sorted(rows, key=lambda r: r["batch"])) + "\n")):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
print(f"merged batch(es) {sorted({r['batch'] for r in new['rows']})} into {dest}")
EOF
}

bench() {
  local batches=${GPU_CHECK_BATCHES:-64 512 1} methods=${GPU_CHECK_METHODS:-} flags=() ok=0
  [ "$DRY" = 1 ] && { batches=${GPU_CHECK_BATCHES:-2 1}; methods=${methods:-jax.grad,Real}; flags=(--tiny --repeats 2 --min-time 0); }
  [ "$DRY" != 1 ] && flags=(--repeats 10 --min-time 1)
  [ -n "$methods" ] && flags+=(--methods "$methods")
  # a later call can continue an earlier one's table: carry its results_gpu.json and name it here
  if [ -n "${GPU_CHECK_PREVIOUS:-}" ] && [ ! -f "$OUT/results_gpu.json" ]; then
    cp "$GPU_CHECK_PREVIOUS" "$OUT/results_gpu.json" || die "GPU_CHECK_PREVIOUS=$GPU_CHECK_PREVIOUS cannot be read"
  fi
  local deadline=$((SECONDS + T_BENCH))
  for b in $batches; do   # one process per batch: a timeout loses one batch, not all
    local left=$((deadline - SECONDS))
    if [ $left -lt 20 ]; then STATUS+=("bench batch $b: SKIPPED (budget spent)"); ok=1; continue; fi
    if run "bench batch $b" "$left" - "$PY" benchmarks/bench_bert.py --batch-sizes "$b" "${flags[@]}" \
         --json "$WORK/bert_b$b.json"; then
      merge_bench "$WORK/bert_b$b.json" || { STATUS+=("bench merge $b: FAILED"); ok=1; }
    else ok=1; fi
  done
  [ -f "$OUT/results_gpu.md" ] && cat "$OUT/results_gpu.md"
  return $ok
}

tropical() {
  local flags=(--budget-s $((T_TROP - 30 > 10 ? T_TROP - 30 : 10)))
  [ "$DRY" = 1 ] && flags+=(--tiny --pallas-interpret --sweep none --repeats 2 --min-time 0)
  [ -n "${GPU_CHECK_TROPICAL_SHAPES:-}" ] && flags+=(--shapes "$GPU_CHECK_TROPICAL_SHAPES")
  # the whole 27-tile sweep needs the stage alone; within `all`, four tiles
  [ "$DRY" != 1 ] && flags+=(--sweep "${GPU_CHECK_SWEEP:-$([ "$STAGE" = all ] && echo quick || echo full)}")
  run tropical "$T_TROP" - "$PY" benchmarks/bench_tropical.py "${flags[@]}" --json "$OUT/tropical_gpu.json"
}

say "stage $STAGE, OUT=$OUT, dry run $DRY, python $PY"
setup
case "$STAGE" in
  tests) tests ;;
  bench) bench ;;
  tropical) tropical ;;
  all) tests; bench; tropical ;;
esac
say "summary"
printf '  %s\n' "${STATUS[@]}"
if printf '%s\n' "${STATUS[@]}" | grep -q -E "FAILED|TIMEOUT|SKIPPED"; then
  echo "gpu_check: FAILED or incomplete stages above (logs in $OUT)" >&2
  exit 1
fi
say "all stages ok; results in $OUT"
