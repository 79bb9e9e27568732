#!/bin/sh
# The one install recipe of embedserve: `make` (.venv) and both Docker images run it, so they cannot diverge.
#   deploy/install.sh VENV EXTRAS          e.g. deploy/install.sh .venv dev  |  /opt/embedserve all,rust,loadtest
# TORCH_INDEX_URL, when set, is where torch comes from (the CPU image uses PyTorch's CPU index).
set -eu
venv=$1
extras=$2
python=${PYTHON:-python3}

"$python" -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
# torch first, pinned exactly: that pin is the CPU build here; a looser one would pull a multi-GB CUDA build.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$venv/bin/pip" install torch==2.13.0 --index-url "$TORCH_INDEX_URL"
else
    "$venv/bin/pip" install torch==2.13.0
fi
# Every other package at the version in constraints.txt: reproducible, and no resolver backtracking.
constraints=$(dirname "$0")/constraints.txt
"$venv/bin/pip" install -c "$constraints" ${EDITABLE:+-e} ".[$extras]"
# The candle and ort backends (extra `rust`, part of dev): embed-anything's wheel pins onnxruntime==1.22.0, which its
# Rust code does not need (its ONNX path loads the libonnxruntime of whatever onnxruntime is installed), so it is
# installed without its dependencies and the project's onnxruntime stays (tests/server/backends/test_rust.py).
case ",$extras," in
    *,rust,*|*,dev,*)
        "$venv/bin/pip" install --no-deps "embed-anything==0.7.1"
        ;;
esac
# onnxruntime and onnxruntime-gpu install the same module: with the gpu extra, keep only the GPU build.
case ",$extras," in
    *,gpu,*)
        gpu_version=$("$venv/bin/pip" show onnxruntime-gpu | sed -n 's/^Version: //p')
        "$venv/bin/pip" uninstall -y onnxruntime onnxruntime-gpu
        "$venv/bin/pip" install --no-deps "onnxruntime-gpu==$gpu_version"
        ;;
esac
