OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1; D=data/mnist
python3 -m cli.main train --dataset mnist --data-dir $D --out runs/sup --recipe supervised --bits 64 > $OUT/sup_train.txt 2>&1; tail -2 $OUT/sup_train.txt
python3 -m cli.main evaluate --model runs/sup --dataset mnist --data-dir $D --baselines '' 2>&1 | grep -v chunk/s | tail -3
timeout 200 python3 -m pytest -q -p no:cacheprovider tests --deselect tests/test_milvus.py 2>&1 | tail -4
