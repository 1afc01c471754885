"""Retrieval quality per bit length: the default recipe, the seed recipe, ITQ and LSH.

    python benchmarks/quality.py --data-dir ../shared/data/mnist [--dataset mnist] [--bits 16,32,64,128,256,512]
                                 [--epochs 3] [--recipes default,seed] [--out DIR]

Database = train split, queries = test split, relevant = same label, mAP over the whole
ranking (tie-aware). Writes DIR/quality_<dataset>.md (a table) and DIR/quality_<dataset>.png
(mAP vs bits).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table, score_baseline, train_and_score  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--bits", default="16,32,64,128,256,512")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--recipes", default="default,seed")
    p.add_argument("--baselines", default="itq,lsh")
    p.add_argument("--out", default="benchmarks/out")
    a = p.parse_args()

    from hashing.data import load_dataset
    from hashing.plots import line_plot
    from hashing.train import TrainConfig, apply_recipe

    db, qs = load_dataset(a.dataset, "train", a.data_dir), load_dataset(a.dataset, "test", a.data_dir)
    bits_list = [int(b) for b in a.bits.split(",")]
    rows, series = [], {}
    for method in a.recipes.split(",") + a.baselines.split(","):
        for bits in bits_list:
            if method in ("itq", "lsh", "pcah"):
                r = score_baseline(method, bits, db, qs)
            else:
                cfg, obj = apply_recipe(method, {"bits": bits}, {})
                r = train_and_score(cfg, TrainConfig(dataset=a.dataset, data_dir=a.data_dir, epochs=a.epochs,
                                                     recipe=method, objective=obj), db, qs)
            rows.append({"method": method, "bits": bits, **r})
            series.setdefault(method, ([], []))
            series[method][0].append(bits)
            series[method][1].append(r["mAP"])
            print(f"{method:10s} {bits:4d} bits  mAP {r['mAP']:.4f}  P@100 {r['precision@100']:.4f}  "
                  f"{r['seconds']:.0f}s", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"{a.dataset}: database {len(db)} (train), queries {len(qs)} (test), {a.epochs} epochs per model; "
              f"{machine()}")
    table = markdown_table(rows, ["method", "bits", "mAP", "precision@100", "seconds"])
    (out / f"quality_{a.dataset}.md").write_text(header + "\n\n" + table + "\n")
    line_plot(series, out / f"quality_{a.dataset}.png", "bits", "mAP", f"{a.dataset}: mAP vs bits", logx=True)
    print(header)
    print(table)


if __name__ == "__main__":
    main()
