#!/usr/bin/env bash
# The CUDA checks and GPU figures on a GPU host without network, from the bundle that `make gpu-bundle` builds in
# .gpu/ (tools/gpu_bundle.py). Run there, from the repository root with .gpu/ beside it:
#
#   bash tests/gpu_host/check.sh
#
# It writes env.txt, tests.txt and one bench-*.txt per run into $OUT (default .gpu/out), and takes about 5 minutes
# on one H100 or H200: the tests, then the bench of the torch backend in float16 and bfloat16, then ONNX Runtime's
# CUDA provider where the host's onnxruntime has it.
set -uo pipefail
OUT=${OUT:-.gpu/out}
SITE=/tmp/embedserve-site
MODEL=/tmp/embedserve-minilm
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl \
    || { echo "error: the bundle's wheels do not install on this host" >&2; exit 1; }
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export EMBEDSERVE_CACHE=/tmp/embedserve-cache
python3 -m tools.gpu_bundle unpack .gpu/minilm "$MODEL" || exit 1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    lscpu | grep -E '^(Model name|CPU\(s\)):'
    python3 -c 'import torch, onnxruntime as ort, transformers
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("transformers", transformers.__version__, "onnxruntime", ort.__version__, ort.get_available_providers())'
} 2>&1 | tee "$OUT/env.txt"

EMBEDSERVE_TEST_MODEL_DIR=$MODEL python3 -m pytest -p no:cacheprovider -q -rs tests/server/backends/test_gpu.py 2>&1 \
    | tee "$OUT/tests.txt"

bench() {  # $1: the output's name; the rest: bench arguments
    local name=$1
    shift
    python3 -m cli bench --model "$MODEL" --served-backends '' --seconds 3 "$@" 2>&1 | tee "$OUT/bench-$name.txt"
}
bench torch-float16 --backends torch --device cuda --dtype float16 --batch-sizes 1,32,128,512
bench torch-bfloat16 --backends torch --device cuda --dtype bfloat16 --batch-sizes 32,128 --parity-texts 32
if python3 -c 'import onnxruntime as ort, sys; sys.exit("CUDAExecutionProvider" not in ort.get_available_providers())'; then
    bench onnx-cuda --backends torch,onnx --device cuda --dtype float32 --batch-sizes 32,128  # ONNX runs float32
else
    echo "this host's onnxruntime has no CUDA provider (it needs onnxruntime-gpu): ONNX Runtime on CUDA not run" \
        | tee "$OUT/bench-onnx-cuda.txt"
fi
