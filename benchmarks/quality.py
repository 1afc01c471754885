"""Retrieval quality per bit length: the default recipe, the original recipe, ITQ, LSH and L2 on pixels.

    python benchmarks/quality.py --data-dir ../shared/data/mnist [--dataset mnist] [--bits 16,32,64,128,256,512]
                                 [--epochs 1] [--recipes default,original] [--baselines itq,lsh,l2] [--tag T]
                                 [--out DIR] [--set KEY=VALUE ...]

Database = train split, queries = test split, relevant = same label, mAP over the whole
ranking (tie-aware), mAP@1000, precision@1 and @100. `l2` is exact float kNN on the raw pixels
(no bits: one row). `--set neighbours=20` passes a training setting to every recipe, as its flag would. Writes DIR/quality_<dataset>[_T].md (a table) and .png (mAP vs bits).
Configs are built as `hashing train` builds them (hashing.train.recipes.resolve): --epochs, when
given, overrides every recipe, like the flag; without it each recipe trains for its own
default length for the dataset (`hashing train --help` lists them: the default 5 epochs, 8 on
fashion-mnist; the supervised recipe 15, 60 on fashion-mnist).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table, score_baseline, score_l2, train_and_score  # noqa: E402


KS = (1, 100)       # precision@1: is the first answer right; @100: the top of the ranking


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--bits", default="16,32,64,128,256,512")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's length (default: the recipe's)")
    p.add_argument("--recipes", default="default,original")
    p.add_argument("--baselines", default="itq,lsh,l2")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--train-images", type=int, default=None,
                   help="train each model on the first N train images (the database is still the whole split)")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting for every recipe (a JSON value: neighbours=20, schedule=\"cosine\")")
    a = p.parse_args()
    import json

    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}

    from hashing.images.datasets import load_dataset
    from hashing.images.plots import line_plot

    db, qs = load_dataset(a.dataset, "train", a.data_dir), load_dataset(a.dataset, "test", a.data_dir)
    bits_list = [int(b) for b in a.bits.split(",")]
    rows, series = [], {}
    methods = [m for m in a.recipes.split(",") + a.baselines.split(",") if m]
    for method in methods:
        if method == "l2":
            r = score_l2(db, qs, KS)
            rows.append({"method": method, "bits": "float", **r})
            print(f"l2 on pixels  mAP {r['mAP']:.4f}  P@100 {r['precision@100']:.4f}  {r['seconds']:.0f}s", flush=True)
            continue
        for bits in bits_list:
            if method in ("itq", "lsh", "pcah"):
                r = score_baseline(method, bits, db, qs, KS)
            else:
                r = train_and_score(method, db, qs, KS, train_images=a.train_images, bits=bits, epochs=a.epochs,
                                    **extra)
            rows.append({"method": method, "bits": bits, **r})
            series.setdefault(method, ([], []))
            series[method][0].append(bits)
            series[method][1].append(r["mAP"])
            print(f"{method:10s} {bits:4d} bits  mAP {r['mAP']:.4f}  P@100 {r['precision@100']:.4f}  "
                  f"{r['seconds']:.0f}s", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trained_on = f"models trained on the first {a.train_images} train images; " if a.train_images else ""
    header = f"{a.dataset}: database {len(db)} (train), queries {len(qs)} (test); {trained_on}{machine()}"
    settings = "".join(f"; every recipe with {k}={v}" for k, v in extra.items())
    header += settings
    table = markdown_table(rows, ["method", "bits", "epochs", "mAP", "precision@1", "precision@100", "mAP@1000",
                                  "seconds"])
    name = f"quality_{a.dataset}" + (f"_{a.tag}" if a.tag else "")
    (out / f"{name}.md").write_text(header + "\n\n" + table + "\n")
    line_plot(series, out / f"{name}.png", "bits", "mAP", f"{a.dataset}: mAP vs bits", logx=True)
    print(header)
    print(table)


if __name__ == "__main__":
    main()
