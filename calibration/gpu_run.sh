#!/usr/bin/env bash
# One bounded GPU calibration: Llama-3.1-8B in bf16/int8/int4/fp8, each format validated, within
# BUDGET seconds (default 480) in all; then Qwen3-8B with whatever time is left. Every finished
# format is a complete profile directory; everything is packed into ARCHIVE (default
# calibration-gpu.tar.gz, or $OUT/calibration-gpu.tar.gz when $OUT is set), also after a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-480}
ROOT=${ROOT:-/tmp/sunsim-calibration}
ARCHIVE=${ARCHIVE:-${OUT:-.}/calibration-gpu.tar.gz}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
mkdir -p "$ROOT"
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
pack() { $PY -m calibration.pack "$ARCHIVE" "$ROOT"/* "$ROOT/log.txt" 2>&1 || tar czf "$ARCHIVE" -C "$ROOT" . ; }
trap pack EXIT
{
  echo "[gpu_run] $(date -u +%FT%TZ) budget ${BUDGET}s"
  $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0))"
  $PY -c "import triton, gemlite; print('triton', triton.__version__, 'gemlite', gemlite.__version__)" || echo "[gpu_run] gemlite missing: int4/int8 will be skipped"
  rc=0
  # Llama: the hard budget is enforced inside (per point and per decode step); `timeout` only guards a hang.
  timeout --signal=INT $(( $(left) + 30 )) $PY -m sunsim calibrate --model llama-3.1-8b --dtypes bf16,int8,int4,fp8 \
      --device cuda --grid quick --time-budget $(( $(left) - 10 )) --validate-requests 64 \
      --out "$ROOT/h100-llama-3.1-8b" || rc=$?
  echo "[gpu_run] llama exit $rc after $(( $(date +%s) - start ))s"
  if [ "$(left)" -gt 90 ]; then
    timeout --signal=INT $(( $(left) + 20 )) $PY -m sunsim calibrate --model qwen3-8b --dtypes bf16,int4,fp8,int8 \
        --device cuda --grid quick --time-budget $(( $(left) - 10 )) --validate-requests 64 \
        --out "$ROOT/h100-qwen3-8b" || echo "[gpu_run] qwen exit $?"
  else
    echo "[gpu_run] no time left for qwen3-8b"
  fi
  echo "[gpu_run] done after $(( $(date +%s) - start ))s"
  exit $rc
} 2>&1 | tee "$ROOT/log.txt"
exit "${PIPESTATUS[0]}"
