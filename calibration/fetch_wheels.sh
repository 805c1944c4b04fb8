#!/usr/bin/env bash
# Download the wheels the GPU image lacks into .whl/ (CPython 3.12, manylinux x86-64), for carrying
# to a machine with no package registry. The image (IMAGE below) already has torch, triton 3.6,
# numpy, pandas, matplotlib, pyyaml, rich, pyarrow; it lacks simpy, pydantic (+ pydantic-core,
# annotated-types, typing-inspection), gemlite and gemlite's tqdm. gemlite ships only a source archive
# (pure Python): it is built into a wheel here. typing-extensions is in the image but pydantic needs a
# recent one: carried too. Every runtime requirement of the carried wheels (their METADATA) must be
# carried or in the image: checked at the end (installed with --no-deps, a gap would only show at import).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
IMAGE=(torch triton numpy pandas matplotlib pyyaml rich pyarrow)
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude" || true
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d .whl \
    simpy==4.1.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 tqdm==4.70.1
$PY -m pip wheel -q --no-deps --no-build-isolation -w .whl gemlite==0.6.0.post2 2>/dev/null \
  || $PY -m pip wheel -q --no-deps -w .whl gemlite==0.6.0.post2
ls -l .whl
$PY -m calibration.wheels .whl "${IMAGE[@]}"
