#!/usr/bin/env bash
# One GPU session's measurements, as a single device call (prepared; first run still to come).
#
# Before: onnxruntime-gpu installed under /tmp/site on the warm GPU machine (../shared/device/ORT_GPU.md), and
# `.gpuwheels/` carried with the pure-Python export dependencies the machine lacks (and PyAV for the end-to-end
# stages), made here with:
#   pip download --no-deps -d .gpuwheels onnxslim==0.1.98 onnxconverter-common==1.16.0 tqdm pytest pluggy \
#       iniconfig pytest-timeout
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .gpuwheels av
# (35 MB: one carry). Device call, right after the five ORT-GPU chunk calls while the machine is warm:
#   run(carry=[".gpuwheels"], command="OUT=$OUT bash benchmarks/gpu_session.sh", timeout_s=600)
# Writes everything under $OUT (the device tool brings it back): doctor, GPU tests, bench JSON.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpuwheels/*.whl
python3 -c "import onnxruntime as ort; ort.preload_dlls(); print(ort.__version__, ort.get_available_providers())"
DATE=$(date +%F)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr A-Z a-z)
GPU=${GPU:-gpu}
python3 -m export.fixtures --out /tmp/pw > "$OUT/fixtures.log" 2>&1
python3 cli.py export --weights /tmp/pw --out /tmp/models --precision both --skip-winograd > "$OUT/export.log" 2>&1 \
  || { tail -20 "$OUT/export.log"; exit 1; }
python3 cli.py doctor --models /tmp/models --device cuda --json > "$OUT/doctor.json"; python3 cli.py doctor --models /tmp/models --device cuda --no-smoke | tail -30
LIVEPORTRAIT_GPU_MODELS=/tmp/models python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15
python3 cli.py bench --models /tmp/models --weights /tmp/pw --device cuda --precision fp16 --torch-compile \
  --batch-sizes 1,8 --repeats 20 --warmup 3 --frames 64 --json "$OUT/$GPU-fp16-$DATE.json" | tail -25
python3 cli.py bench --models /tmp/models --weights /tmp/pw --device cuda --precision fp16 --cuda-graph \
  --batch-sizes 8 --repeats 20 --warmup 3 --stages warp_decode,motion+warp+decode --no-torch \
  --json "$OUT/$GPU-fp16-cudagraph-$DATE.json" | tail -8
