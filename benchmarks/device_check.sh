#!/usr/bin/env bash
# One short GPU check of stlens, for the lent device machine (one H100/H200, python3 = 3.12 with torch preinstalled,
# no internet). Also runs on a CPU-only machine: the --device cuda steps are then skipped, saying so.
#
#   bash benchmarks/device_check.sh                       # on the device: OUT is set, python3 holds torch
#   OUT=/tmp/devout PY=.venv/bin/python bash benchmarks/device_check.sh   # dry run here
#
# Steps (each under `timeout`, each logged; a failing step does not stop the others):
#   setup    install the carried wheels (.whl/: av, scikit-video) to $SITE, print GPU / versions
#   pytest   tests/test_devices.py test_workers.py test_moments_numerics.py test_pair_index.py (cuda-parametrized)
#   cli_*    stlens measure torchvision:r3d_18 on sample: with --device cuda, --device cpu, --device cuda
#            --precision auto; cli_compare: per-layer cuda vs cpu (dims, %, unit classes, max |Δ r|) and auto vs fp32
#   scaling  benchmarks/scaling.py --device cuda --parts a,c (skipped when the script is absent)
#   stylize  tests/test_device_stylizers.py -k gpu (the stated GPU tolerance), then
#            benchmarks/device_stylize.py --device cuda: palette/fourier on the GPU against the workers' numpy (max
#            |Δ| grey levels, share of pixels differing, ms per clip) and the golden tolerance: measure with
#            stylize_on=device against workers on the GPU (dims, %, unit classes equal? max rel |Δ score|, |Δ r|),
#            and benchmarks/stylizer_speed.py: neural-fast's frames/s on the GPU
# Files back in $OUT (at most 8): summary.txt, setup.log, pytest.log, cli.log, cli_compare.json, scaling.log,
# scaling_cuda.json, stylize.log (its JSON report at the end). summary.txt: one line per step: name, exit code, secs.
#
# The whole run stops by BUDGET seconds (default 340): each step's timeout is cut to what is left.
# Other knobs: PY (python3), OUT, SITE (/tmp/site, where the wheels go), DEV (cuda; cpu = every step on the CPU),
# LIMIT_SCALE (1), SCALING_ARGS (extra words for scaling.py, e.g. "--pairs 8 --repeats 2").
set -u

cd "$(dirname "$0")/.." || exit 1
PY=${PY:-python3}
OUT=${OUT:-/tmp/devout}
SITE=${SITE:-/tmp/site}
BUDGET=${BUDGET:-340}
SCALING_ARGS=${SCALING_ARGS:-}
LIMIT_SCALE=${LIMIT_SCALE:-1}  # multiplies every step's timeout (slow dry runs)
DEV=${DEV:-cuda}  # the device of the GPU steps; DEV=cpu runs them all on the CPU (a dry run of every branch)
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/stlens_devcheck.XXXXXX)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PY OUT SITE TMP
export MPLBACKEND=Agg
T0=$(date +%s)

# log STEP LOGFILE LIMIT CMD...: run CMD under timeout (capped by what is left of BUDGET), append its output to
# $OUT/LOGFILE, and its name, exit code and seconds to summary.txt. 124/137: timed out.
log_step() {
    local name=$1 logfile=$2 limit=$3
    shift 3
    limit=$((limit * LIMIT_SCALE))
    local left=$((BUDGET - ($(date +%s) - T0) - 5))
    if ((left < 15)); then
        echo "== $name: SKIPPED, out of time (budget ${BUDGET}s)" | tee -a "$OUT/$logfile"
        printf '%-12s rc=%-7s %6ss  (out of time)\n' "$name" skipped 0 >>"$SUMMARY"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT/$logfile"
    local start end rc
    start=$(date +%s.%N)
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$logfile"
    rc=${PIPESTATUS[0]}
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "== $name: rc=$rc in ${secs}s" | tee -a "$OUT/$logfile"
    printf '%-12s rc=%-7s %6ss\n' "$name" "$rc" "$secs" >>"$SUMMARY"
    return 0
}

skip_step() {  # skip_step NAME LOGFILE REASON
    echo "== $1: SKIPPED: $3" | tee -a "$OUT/$2"
    printf '%-12s rc=%-7s %6ss  (%s)\n' "$1" skipped 0 "$3" >>"$SUMMARY"
}

# ---- setup: wheels, versions -------------------------------------------------------------------------------------
setup() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        ls -l .whl/
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
            || { echo "pip install of .whl/ FAILED"; return 1; }
    else
        echo "no .whl/ folder: av and scikit-video must already be installed"
    fi
    echo "--- nvidia-smi -L"
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader; else echo "(no nvidia-smi)"; fi
    echo "--- nproc $(nproc); $(uname -srm)"
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          "bf16", torch.cuda.is_bf16_supported(including_emulation=False))
for name in ("torchvision", "numpy", "pandas", "scipy", "cv2", "av", "skimage", "h5py", "matplotlib", "jinja2",
             "safetensors", "tqdm", "PIL", "pytest"):
    try:
        m = importlib.import_module(name)
        print(f"{name:12s}", getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as exc:
        print(f"{name:12s} MISSING: {exc!r}")
import stlens
print("stlens", stlens.__file__)
from stlens.video.sources import sample_videos
print("sample:", [p.name for p in sample_videos()])
EOF
}
export PYTHONPATH="src:$SITE${PYTHONPATH:+:$PYTHONPATH}"  # the repo's stlens first, then the wheels
export -f setup
log_step setup setup.log 60 bash -c setup

if [[ $DEV != cuda* ]] || "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    CUDA=1
else
    CUDA=0
    echo "CUDA is not available: the --device $DEV steps are skipped" | tee -a "$OUT/setup.log"
fi

# ---- (i) device-parametrized tests ----------------------------------------------------------------------------
log_step pytest pytest.log 150 "$PY" -m pytest -q -p no:cacheprovider -rfEs --durations=10 \
    tests/test_devices.py tests/test_workers.py tests/test_moments_numerics.py tests/test_pair_index.py

# ---- (ii) end-to-end CLI: cuda vs cpu, and --precision auto on cuda -------------------------------------------
MEASURE=(-m stlens measure --model torchvision:r3d_18 --frames 16 --size 112 --data sample: --pairs 16 --quiet)
if ((CUDA)); then
    log_step cli_cuda cli.log 90 "$PY" "${MEASURE[@]}" --device "$DEV" --out "$TMP/gpu"
else
    skip_step cli_cuda cli.log "no CUDA"
fi
log_step cli_cpu cli.log 120 "$PY" "${MEASURE[@]}" --device cpu --out "$TMP/cpu"
if ((CUDA)); then
    log_step cli_auto cli.log 90 "$PY" "${MEASURE[@]}" --device "$DEV" --precision auto --out "$TMP/auto"
else
    skip_step cli_auto cli.log "no CUDA"
fi

compare() {
    "$PY" - "$TMP" "$OUT/cli_compare.json" <<'EOF'
import json, sys
from pathlib import Path
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = {k: json.loads((tmp / k / "result.json").read_text()) for k in ("gpu", "cpu", "auto")
        if (tmp / k / "result.json").exists()}
report = {k: {"device": r["device"], "precision": r["precision"], "timing": r.get("timing")} for k, r in runs.items()}
for k, r in report.items():
    print(f"{k:5s} device={r['device']} precision={r['precision']} timing={r['timing']}")
ok = True

def diff(a, b, label):
    """Per layer: dims, percents and unit classes equal? largest |Δ r| and |Δ CI bound|."""
    rows = []
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        assert la["layer"] == lb["layer"], (la["layer"], lb["layer"])
        dr = max(abs(la["score"][f] - lb["score"][f]) for f in ("dynamic", "static"))
        dci = max(abs(x - y) for f in ("dynamic", "static") for x, y in zip(la["ci95"][f], lb["ci95"][f]))
        dpct = max(abs(la["percent"][f] - lb["percent"][f]) for f in la["percent"])
        rows.append({"layer": la["layer"], "dims_equal": la["dims"] == lb["dims"],
                     "percent_equal": la["percent"] == lb["percent"], "units_equal": la["units"] == lb["units"],
                     "max_abs_dr": dr, "max_abs_dpercent": dpct, "max_abs_dci95": dci,
                     "dims": [la["dims"], lb["dims"]]})
    print(f"--- {label}")
    print(f"{'layer':8s} {'dims=':>6s} {'%=':>6s} {'units=':>7s} {'max|dr|':>10s} {'max|d%|':>8s} {'max|dCI|':>9s}")
    for r in rows:
        print(f"{r['layer']:8s} {r['dims_equal']!s:>6s} {r['percent_equal']!s:>6s} {r['units_equal']!s:>7s} "
              f"{r['max_abs_dr']:10.2e} {r['max_abs_dpercent']:8.2f} {r['max_abs_dci95']:9.2f}")
    return rows

if "gpu" in runs and "cpu" in runs:
    report["cuda_vs_cpu"] = rows = diff(runs["gpu"], runs["cpu"], "cuda fp32 vs cpu fp32")
    same = all(r["dims_equal"] and r["percent_equal"] for r in rows)
    print("cuda vs cpu: dims and percentages", "EQUAL" if same else "DIFFER",
          f"; max |dr| over layers {max(r['max_abs_dr'] for r in rows):.2e}")
    ok &= same
if "auto" in runs and "gpu" in runs:
    report["auto_vs_fp32_cuda"] = rows = diff(runs["auto"], runs["gpu"], "cuda --precision auto vs cuda fp32")
    print("cuda --precision auto recorded:", runs["auto"]["precision"],
          f"; max |d%| vs fp32 {max(r['max_abs_dpercent'] for r in rows):.2f} points")
    ta, tg = runs["auto"].get("timing") or {}, runs["gpu"].get("timing") or {}
    if ta.get("forward_seconds") and tg.get("forward_seconds"):
        print(f"forward seconds fp32 {tg['forward_seconds']} vs auto {ta['forward_seconds']}: "
              f"x{tg['forward_seconds'] / ta['forward_seconds']:.2f}")
    ok &= runs["auto"]["precision"] == "bf16"
out.write_text(json.dumps(report, indent=1))
if len(runs) < 2:
    print("fewer than two runs to compare:", sorted(runs))
sys.exit(0 if ok and len(runs) >= 2 else 1)
EOF
}
export -f compare
log_step cli_compare cli.log 30 bash -c compare

# ---- (iii) scaling benchmark, parts a and c on the GPU ---------------------------------------------------------
if [[ ! -f benchmarks/scaling.py ]]; then
    skip_step scaling scaling.log "benchmarks/scaling.py is absent"
elif ((!CUDA)); then
    skip_step scaling scaling.log "no CUDA"
else
    # shellcheck disable=SC2086  # SCALING_ARGS: extra words on purpose
    log_step scaling scaling.log 150 "$PY" benchmarks/scaling.py --device "$DEV" --parts a,c \
        --json "$OUT/scaling_$DEV.json" $SCALING_ARGS
fi

# ---- (iv) stylizing on the device against the workers, and the golden tolerance of the device path ------------
if ((CUDA)); then
    stylize_device() {  # rc: the first failure of the two
        local rc=0
        "$PY" -m pytest -q -p no:cacheprovider -rfEs tests/test_device_stylizers.py -k gpu || rc=$?
        "$PY" benchmarks/device_stylize.py --device "$DEV" --json "$TMP/stylize.json" || ((rc)) || rc=$?
        cat "$TMP/stylize.json" 2>/dev/null
        # neural-fast's frames/s on the GPU (docs/stylizers.md), fourier for scale
        "$PY" benchmarks/stylizer_speed.py --device "$DEV" --stylizers neural-fast,fourier --frames 16 || ((rc)) || rc=$?
        return "$rc"
    }
    export -f stylize_device
    log_step stylize stylize.log 90 bash -c stylize_device
else
    skip_step stylize stylize.log "no CUDA"
fi

# ---- (v) torchrun across ranks needs several GPUs (NCCL): not checked on a one-GPU machine --------------------

echo "--- total $(($(date +%s) - T0))s" >>"$SUMMARY"
echo "===== summary"
cat "$SUMMARY"
rm -rf "$TMP"
exit 0
