#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (its python3 holds torch, timm,
# torchvision, pytest; no gradio). Usage: scripts/gpu_check.sh tests|bench|all [OUTDIR]
# Each step has its own timeout so a hang cannot eat the whole lease; logs go to OUTDIR.
set -u
mode=${1:-all}
out=${2:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 \
       CNNCOMPARE_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# timm as the project pins it (pure Python), when carried in .whl/ beside the repo
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, timm, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/gpu.txt"
if [[ $mode == tests || $mode == all ]]; then
  timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs tests/test_cuda_training.py \
    tests/test_cuda_profiling.py 2>&1 | tail -40 | tee "$out/pytest.log"
fi
if [[ $mode == bench || $mode == all ]]; then
  timeout 420 python3 benchmarks/bench_gpu.py --out "$out/bench.json" 2>&1 | tee "$out/bench.log" | tail -60
  cp benchmarks/RESULTS.md "$out/RESULTS.md"
fi
