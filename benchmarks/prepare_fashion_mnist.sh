#!/usr/bin/env bash
# Lay out Debian's dataset-fashion-mnist (gzipped IDX under /usr/share/datasets/fashion-mnist)
# in torchvision's layout: OUT/FashionMNIST/raw/*-ubyte. Then: --dataset fashion-mnist --data-dir OUT
set -euo pipefail
out=${1:-data}
src=${FASHION_MNIST_SRC:-/usr/share/datasets/fashion-mnist}
[ -d "$src" ] || { echo "Error: $src not found; apt-get install dataset-fashion-mnist" >&2; exit 1; }
mkdir -p "$out/FashionMNIST/raw"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$src/$f.gz" ]; then gunzip -c "$src/$f.gz" > "$out/FashionMNIST/raw/$f"; else cp "$src/$f" "$out/FashionMNIST/raw/$f"; fi
done
echo "wrote $out/FashionMNIST/raw"
