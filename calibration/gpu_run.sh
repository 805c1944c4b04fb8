#!/usr/bin/env bash
# One bounded GPU calibration: Llama-3.1-8B in bf16/int8/int4/fp8, each format validated, within
# BUDGET seconds (default 480) in all; then Qwen3-8B with whatever time is left. Every finished
# format is a complete profile directory named after the GPU (<device>-llama-3.1-8b-bf16, ...:
# h100, h200, a100, l40s, b200... from torch.cuda.get_device_name); everything, the log included,
# is packed into one archive, also after a failure.
#
# Usage: calibration/gpu_run.sh [--out DIR] [--dry-run]
#   --out DIR   folder for the archive DIR/calibration-gpu.tar.gz (default: $OUT when set, else
#               /tmp/sunsim-gpu-out)
#   --dry-run   print the device tag, the output folders and the archive, and stop
# Environment: BUDGET (seconds), ROOT (work folder, default /tmp/sunsim-calibration; a rerun resumes
# the formats finished there), ARCHIVE (the archive's full path), PYTHON, DEVICE_NAME (use this name
# instead of asking CUDA; for tests). Without a CUDA GPU it stops at once with exit status 2.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${OUT:-/tmp/sunsim-gpu-out}
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu_run.sh: --out needs a folder" >&2; exit 2; }
           DIR=$2; shift 2 ;;
    --out=*) DIR=${1#--out=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_run.sh: unknown argument '$1' (usage: gpu_run.sh [--out DIR] [--dry-run])" >&2; exit 2 ;;
  esac
done
BUDGET=${BUDGET:-480}
ROOT=${ROOT:-/tmp/sunsim-calibration}
ARCHIVE=${ARCHIVE:-$DIR/calibration-gpu.tar.gz}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
# The GPU names the outputs; no CUDA GPU: say so now (exit 2) rather than fail every format.
if [ -n "${DEVICE_NAME:-}" ]; then
  DEV=$($PY -m calibration.device slug "$DEVICE_NAME") || exit 2
else
  DEV=$($PY -m calibration.device slug) || exit 2
fi
LLAMA="$ROOT/$DEV-llama-3.1-8b"
QWEN="$ROOT/$DEV-qwen3-8b"
echo "[gpu_run] device ${DEVICE_NAME:-cuda:0} -> $DEV; outputs $LLAMA, $QWEN (-<format> each); archive $ARCHIVE"
[ "$DRY" = 1 ] && exit 0
mkdir -p "$ROOT" "$(dirname "$ARCHIVE")" || exit 2
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
# "$ROOT"/* holds log.txt once; the hidden .partial folders of unfinished formats are left out.
pack() { $PY -m calibration.pack "$ARCHIVE" "$ROOT"/* 2>&1 || tar czf "$ARCHIVE" --exclude='.*.partial' -C "$ROOT" . ; }
trap pack EXIT
{
  echo "[gpu_run] $(date -u +%FT%TZ) budget ${BUDGET}s"
  $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0))"
  $PY -c "import triton, gemlite; print('triton', triton.__version__, 'gemlite', gemlite.__version__)" \
    || echo "[gpu_run] gemlite not importable (see above): int4/int8 will be skipped"
  rc=0
  # Llama: the hard budget is enforced inside (per point and per decode step); `timeout` only guards a hang.
  timeout --signal=INT $(( $(left) + 30 )) $PY -m sunsim calibrate --model llama-3.1-8b --dtypes bf16,int8,int4,fp8 \
      --device cuda --grid quick --time-budget $(( $(left) - 10 )) --validate-requests 64 \
      --out "$LLAMA" || rc=$?
  echo "[gpu_run] llama exit $rc after $(( $(date +%s) - start ))s"
  if [ "$(left)" -gt 90 ]; then
    timeout --signal=INT $(( $(left) + 20 )) $PY -m sunsim calibrate --model qwen3-8b --dtypes bf16,int4,fp8,int8 \
        --device cuda --grid quick --time-budget $(( $(left) - 10 )) --validate-requests 64 \
        --out "$QWEN" || echo "[gpu_run] qwen exit $?"
  else
    echo "[gpu_run] no time left for qwen3-8b"
  fi
  echo "[gpu_run] done after $(( $(date +%s) - start ))s; archive $ARCHIVE"
  exit $rc
} 2>&1 | tee "$ROOT/log.txt"
exit "${PIPESTATUS[0]}"
