#!/usr/bin/env bash
# Fill benchmarks/gpu/wheels/ (ignored by git) with the Python 3.12 wheels that the GPU
# machine lacks: its image has torch, numpy, scipy, pandas, matplotlib, scikit-image,
# torchvision, einops, h5py, requests, torchmetrics, tqdm, hypothesis and pytest-benchmark,
# but not the peers (deepinv, ptwt, torchdeq), PyWavelets, deepinv's natsort, or asv, and it
# has no package index. Never torch: the image's own is used there.
#
#   bash benchmarks/gpu/fetch_wheels.sh      # on a machine with pip and PyPI, from the repo
#
# Versions are CI's pins (constraints.txt); --no-deps because each dependency the
# image lacks is named here (checked with: unzip -p WHEEL '*/METADATA' | grep ^Requires-Dist).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=benchmarks/gpu/wheels
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$dest" \
  deepinv==0.5.0 natsort ptwt==1.0.1 torchdeq==0.1.0 PyWavelets==1.9.0 \
  asv==0.6.6 asv-runner json5 pympler
ls -l "$dest"
du -sh "$dest"
