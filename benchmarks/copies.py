"""Copy detection: the `copies` recipe against the default recipe and the perceptual hashes.

    python benchmarks/copies.py mnist   --data-dir ../shared/data/mnist
    python benchmarks/copies.py fashion --data-dir DIR --max-images 20000 --epochs 2
    python benchmarks/copies.py colour  --data-dir DIR          (a colour Fashion-MNIST folder, 32x32)

For one dataset: trains a `default` and a `copies` model at --bits (64) through the console
script (or reuses the run folders under --work), runs `hashing evaluate --task copies`
(database = the test split, --copies sources x every edit) on both and `hashing evaluate`
(classes: mAP by label) on both, and writes benchmarks/results/copies_<dataset>.md and the
recall@1-per-edit plot of the copies model to docs/copies_<dataset>.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402
from folders import hashing, write_colour_folder  # noqa: E402

RECIPES = ("copies", "default")


def source(a) -> list:
    if a.dataset == "colour":
        folder = write_colour_folder(Path(a.data_dir), a.work / "fashion-colour", a.colour_train, a.colour_test)
        return ["--images", folder]
    return ["--dataset", "fashion-mnist" if a.dataset == "fashion" else a.dataset, "--data-dir", a.data_dir]


def train(a, recipe: str, src: list) -> tuple[Path, float | None]:
    run = a.work / f"run-{a.dataset}-{recipe}-{a.bits}"
    if (run / "config.json").exists() and a.reuse:
        return run, None
    shutil.rmtree(run, ignore_errors=True)
    extra = ["--max-images", a.max_images] if a.max_images else []
    extra += ["--epochs", a.epochs] if a.epochs else []
    extra += ["--image-size", a.image_size] if a.dataset == "colour" else []
    _, secs = hashing("train", *src, "--recipe", recipe, "--bits", a.bits, *extra, "--out", run, "--quiet")
    return run, secs


def evaluate(run: Path, src: list, *args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        hashing("evaluate", "--model", run, *src, *args, "--json", out, "--quiet")
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["mnist", "fashion", "colour"])
    p.add_argument("--data-dir", default="../shared/data/mnist", help="the IDX files (Fashion-MNIST for colour)")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--max-images", type=int, default=None, help="train on the first N training images")
    p.add_argument("--copies", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=32, help="colour folder only")
    p.add_argument("--colour-train", type=int, default=10_000)
    p.add_argument("--colour-test", type=int, default=2_000)
    p.add_argument("--work", type=Path, default=Path("bench-copies"))
    p.add_argument("--reuse", action="store_true", help="reuse trained run folders under --work")
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    src = source(a)

    runs, copies, classes = {}, {}, {}
    for recipe in RECIPES:
        runs[recipe] = train(a, recipe, src)
        print(f"{recipe}: trained in {runs[recipe][1]} s", flush=True)
        plots = ["--plots", a.work / f"plots-{a.dataset}-{recipe}"]
        copies[recipe] = evaluate(runs[recipe][0], src, "--task", "copies", "--copies", a.copies, *plots,
                                  *(["--baselines", ""] if recipe != "copies" else []))
        classes[recipe] = evaluate(runs[recipe][0], src, "--baselines", "itq" if recipe == "copies" else "")
        print(json.dumps({k: copies[recipe]["model"][k] for k in ("recall@1", "tpr@fpr1e-3")}), flush=True)

    main_report = copies["copies"]
    rows = {f"model ({r} recipe)": copies[r]["model"] for r in RECIPES}
    rows.update(main_report["baselines"])
    keys = ("recall@1", "recall@10", "mAP", "tpr@fpr1e-3")
    edits = list(main_report["model"]["edits"])
    proto = main_report["protocol"]
    lines = [f"# Copy detection on {proto['dataset']}", "",
             f"`python benchmarks/copies.py {' '.join(sys.argv[1:])}` on `{machine()}`.", "",
             f"Database: {proto['database']} images; {proto['sources']} sources x {len(edits)} edits = "
             f"{proto['queries']} queries; overall = {proto['overall']}; {a.bits}-bit models "
             f"({', '.join(f'{r}: trained {s:.0f} s' if s else f'{r}: reused' for r, (_, s) in runs.items())}).", "",
             "| method | bits | " + " | ".join(keys) + " | threshold |", "|---|---|" + "---|" * (len(keys) + 1)]
    for name, r in rows.items():
        if r.get("recall@1") is None:
            lines.append(f"| {name} | {r.get('note', 'n/a')} |")
            continue
        lines.append(f"| {name} | {r['bits']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + f" | {r['threshold']} |")
    lines += ["", "recall@1 per edit:", "", "| method | " + " | ".join(edits) + " |", "|---|" + "---|" * len(edits)]
    for name, r in rows.items():
        if r.get("recall@1") is not None:
            lines.append(f"| {name} | " + " | ".join(f"{r['edits'][e]['recall@1']:.3f}" for e in edits) + " |")
    lines += ["", "The trade-off (classes: `hashing evaluate`, database = train split, queries = test split, "
              "relevant = same label):", "", "| recipe | copies recall@1 | copies TPR@FPR1e-3 | classes mAP | "
              "classes P@100 |", "|---|---|---|---|---|"]
    for r in RECIPES:
        c, m = copies[r]["model"], classes[r]["model"]
        lines.append(f"| {r} | {c['recall@1']:.4f} | {c['tpr@fpr1e-3']:.4f} | {m['mAP']:.4f} | {m['precision@100']:.4f} |")
    itq = classes["copies"]["baselines"].get("itq")
    if itq:
        lines.append(f"| (ITQ, {a.bits} bits) | {main_report['baselines'].get('itq', {}).get('recall@1', 0):.4f} | "
                     f"{main_report['baselines'].get('itq', {}).get('tpr@fpr1e-3', 0):.4f} | {itq['mAP']:.4f} | "
                     f"{itq['precision@100']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"copies_{a.dataset}.md").write_text(text)
    docs = HERE.parent / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copy(a.work / f"plots-{a.dataset}-copies" / "copies_recall.png", docs / f"copies_{a.dataset}.png")


if __name__ == "__main__":
    main()
