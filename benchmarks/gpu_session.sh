#!/usr/bin/env bash
# What this project measures on a lent GPU, in one call of the device tool:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", "data/mnist"])
# .whl holds the faiss-cpu wheel (the GPU machine has no faiss); data/mnist is a copy of
# ../shared/data/mnist. Logs go to $OUT (or ./gpu_out); the summary lines to stdout.
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
# The project itself, editable and offline: it maps cli/ and indexes/ to hashing.cli and hashing.indexes.
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
export PYTHONUNBUFFERED=1
D=${DATA:-data/mnist}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
        grep -v "Warning\|batch/s\|img/s\|chunk/s" "$OUT/$name.txt" | tail -"${TAILN:-4}"; }
TAILN=9 run search 200 python3 benchmarks/gpu_search.py --sizes 1000000,10000000
run train_ae 120 python3 benchmarks/train.py --data-dir $D --device cuda --batch-size 512 --scale-lr
run train_default 120 python3 benchmarks/train.py --data-dir $D --device cuda --batch-size 512 --scale-lr --recipe default
run hashing_train 90 python3 -m hashing train --dataset mnist --data-dir $D --out runs/gpu
TAILN=6 run hashing_evaluate 90 python3 -m hashing evaluate --model runs/gpu --dataset mnist --data-dir $D --baselines itq
run supervised_train 150 python3 -m hashing train --dataset mnist --data-dir $D --out runs/sup --recipe supervised --bits 64
run supervised_evaluate 90 python3 -m hashing evaluate --model runs/sup --dataset mnist --data-dir $D --baselines ''
TAILN=6 run pytest 240 python3 -m pytest -q -p no:cacheprovider tests
# Issue 19's GPU half: where the default recipe's 1.4 s per 60,000-image epoch goes (launches vs kernels).
TAILN=30 run profile_default 180 python3 benchmarks/profile_step.py --data-dir $D --device cuda --batch-size 512 --scale-lr --trace "$OUT/profile_default.json"
run train_default_compiled 180 python3 benchmarks/train.py --data-dir $D --device cuda --batch-size 512 --scale-lr --recipe default --compile
