"""Every gradient estimator under the same budget, on MNIST (database = train, queries = test).

    python benchmarks/estimators.py --data-dir ../shared/data/mnist [--epochs 1] [--bits 512] [--out FILE.md]

Same model and objective (the default recipe as it is when run; results/estimators_mnist.md was
measured with the default of its day, contrastive + 0.5 reconstruction), same seed, same epochs;
only the binarizer's estimator changes. Columns: precision@100, mAP (tie-aware, whole
database), fraction of bits that vary over the database, final training loss, seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table, train_and_score  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--only", default=None, help="comma-separated estimator names")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    a = p.parse_args()

    from hashing.model import estimators
    from hashing.images.datasets import load_dataset

    db, qs = load_dataset(a.dataset, "train", a.data_dir), load_dataset(a.dataset, "test", a.data_dir)
    rows = []
    names = a.only.split(",") if a.only else estimators.names()
    for name in names:
        opts = {"seed": 0} if estimators.get(name).stochastic else {}
        r = train_and_score("default", db, qs, bits=a.bits, estimator=name, estimator_options=opts, epochs=a.epochs,
                            seed=0)
        rows.append({"estimator": name, **r})
        print(f"{name:20s} P@100 {r['precision@100']:.4f} mAP {r['mAP']:.4f} bits used {r['bits_used']:.3f} "
              f"loss {r['final_loss']:.4f} {r['seconds']:.0f}s", flush=True)
    table = markdown_table(rows, ["estimator", "precision@100", "mAP", "bits_used", "final_loss", "seconds"])
    header = (f"{a.dataset}, {a.bits} bits, {a.epochs} epoch(s), default recipe, seed 0; "
              f"database {len(db)}, queries {len(qs)}; {machine()}")
    print(header)
    print(table)
    if a.out:
        Path(a.out).write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
