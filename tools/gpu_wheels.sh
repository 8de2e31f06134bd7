#!/usr/bin/env bash
# Download, here, the wheels that tools/gpu_check.py needs on the lent GPU machine, which has torch but an older
# transformers and no network: the pure-Python dependencies at the versions of requirements/lock.txt, for its
# Python 3.12, into .whl/ (ignored by git; `carry: [".whl"]` takes them along, under 64 MiB). See gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pins=()
# The device has their other needs (anyio, h11, idna, typing-extensions, typer, rich, filelock, fsspec, ...).
for name in transformers huggingface-hub tokenizers safetensors timm httpx2 httpcore2 truststore click hf-xet regex; do
    pin=$(grep -iE "^${name//-/[-_]}==" requirements/lock.txt) || { echo "no pin for $name in requirements/lock.txt"; exit 1; }
    pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
ls -la .whl && du -sh .whl
