"""The trained code layer's signs against ITQ of the same model's features (HashConfig.codes).

    python benchmarks/rotation.py --dataset fashion-mnist --data-dir DIR [--train-images 20000] [--bits 64]
                                  [--lengths 16,32,64,128,256] [--set KEY=VALUE ...] [--out FILE.md]

Trains one model with the default recipe (codes="itq", `--set` settings as `hashing train`'s
flags) and scores, on the same model, database = train split, queries = test split: the
trained layer's signs (codes="layer"), the model's own ITQ codes, ITQ of its features at the
other `--lengths`, and the float cosine of the features (the ceiling any code of them has).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table  # noqa: E402

KS = (1, 100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--lengths", default="", help="other lengths of ITQ of the same features")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    a = p.parse_args()
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}

    import torch

    from hashing.model import checkpoint
    from hashing.codes.baselines import ITQ
    from hashing.codes.bits import pack
    from hashing.images.datasets import load_dataset
    from hashing.evaluate.classes import fitting_sample, rank_all, score_codes
    from hashing.train.recipes import resolve
    from hashing.train.loop import train

    db, qs = load_dataset(a.dataset, "train", a.data_dir), load_dataset(a.dataset, "test", a.data_dir)
    data = db.head(a.train_images)
    cfg, tcfg = resolve("default", db.name, len(data), data_dir=db.data_dir, max_images=a.train_images,
                        bits=a.bits, **{"codes": "itq", **extra})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train(cfg, tcfg, data, out, progress=False)
        seconds = time.perf_counter() - t0
        model = checkpoint.load(out).model

    @torch.inference_mode()
    def outputs(images):                    # (N, bits) layer pre-activations, (N, bits) rotated, (N, D) features
        parts = [(model.encoder(x), model.encoder.rotated(x), model.encoder.features(x))
                 for x in (model.preprocess(torch.from_numpy(images[i:i + 2048])) for i in range(0, len(images), 2048))]
        return [torch.cat(p).numpy() for p in zip(*parts)]

    (zb, rb, fb), (zq, rq, fq) = outputs(db.images), outputs(qs.images)
    rows = []

    def row(name, bits, scores):
        rows.append({"codes": name, "bits": bits, **scores})
        print(f"{name:32s} {bits!s:>5}  mAP {scores['mAP']:.4f}  P@1 {scores['precision@1']:.4f}  "
              f"P@100 {scores['precision@100']:.4f}", flush=True)

    row("trained layer's signs", a.bits, score_codes(pack(zb > 0), pack(zq > 0), db.labels, qs.labels, a.bits, KS,
                                                     progress=False)[0])
    row("ITQ of the features (the model's)", a.bits, score_codes(pack(rb > 0), pack(rq > 0), db.labels, qs.labels,
                                                                 a.bits, KS, progress=False)[0])
    for bits in (int(b) for b in a.lengths.split(",") if b):
        itq = ITQ(bits).fit(fitting_sample(fb))
        row("ITQ of the features", bits, score_codes(itq.codes(fb), itq.codes(fq), db.labels, qs.labels, bits, KS,
                                                     progress=False)[0])

    def cosine(xq, k):                      # the features are unit rows: cosine = inner product
        import faiss

        index = faiss.IndexFlatIP(fb.shape[1])
        index.add(fb)
        S, I = index.search(xq, k)
        return -S, I                       # distances ascending, as rank_all expects

    row("cosine of the float features", "float", rank_all(cosine, fq, qs.labels, db.labels, KS, None,
                                                          progress=False).result())
    trained_on = f", trained on the first {a.train_images} train images" if a.train_images else ""
    header = (f"{a.dataset}: database {len(db)} (train), queries {len(qs)} (test); one default-recipe model of "
              f"{a.bits} bits, {tcfg.epochs} epochs{trained_on}, {seconds:.0f} s; {machine()}"
              + "".join(f"; {k}={v}" for k, v in extra.items()))
    table = markdown_table(rows, ["codes", "bits", "mAP", "precision@1", "precision@100", "mAP@1000"])
    print(header + "\n\n" + table)
    if a.out:
        Path(a.out).write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
