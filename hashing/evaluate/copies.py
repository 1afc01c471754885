"""`hashing evaluate --task copies`: find edited copies of an image, the job perceptual hashes do.

Protocol. The database is every image of one split. `copies` of them, drawn with the seed,
are the sources; each source gets one copy per requested edit (hashing.images.edits: the copy is a
file, a JPEG or a PNG), and that copy is a query whose only relevant item is its source.
Every method codes the database and the copy files its own way: the model and ITQ/LSH read
them through the model's preprocessing (hashing.images.reader.fit_image), the perceptual hashes
read the decoded files as their packages' users do (hashing.images.perceptual). Every query is
ranked against the whole database by Hamming distance.

Metrics, per query then averaged (ties: the expectation over a random order within tied
distances, as everywhere in hashing.codes.metrics): recall@1 and recall@10 (is the source in the
top k), mAP (one relevant item: the mean reciprocal rank of the source). The deduplication
operating point: the Hamming threshold at which the false-positive rate over *all* non-copy
pairs (every query against every database image that is not its source) is 1e-3, and the
true-positive rate there (the share of copies within it of their source). Distances are
integers, so the threshold accepts every pair at distance <= T and, to land on 1e-3 exactly,
a random share of the pairs at T + 1 (tie-aware, hashing.codes.metrics.operating_point); T is
reported as "threshold". The overall numbers pool every edit except a flip when other edits
are asked for (hashing.images.edits.SEPARATE); each edit also has its own, at the overall threshold.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.codes import metrics
from hashing.images.edits import DEFAULT_EDITS, SEPARATE, check_edits
from hashing.core.errors import HashingError
from hashing.images.perceptual import PERCEPTUAL, hasher

FPR = 1e-3
COPY_BASELINES = (*PERCEPTUAL, "itq", "lsh")
KEYS = ("recall@1", "recall@10", "mAP", "tpr@fpr1e-3")


def check_baselines(names) -> tuple[str, ...]:
    from hashing.codes.baselines import HASHERS

    allowed = (*PERCEPTUAL, *HASHERS)
    for name in names:
        if name not in allowed:
            raise HashingError(f"unknown baseline {name!r} for task copies: choose from {', '.join(allowed)}",
                               settings=("task",))
    return tuple(names)


@dataclass
class CopyQueries:
    """The queries: one copy per (source, edit), as the model's arrays and perceptual hash bits."""

    source: np.ndarray                  # (Q,) database row of each query's source
    edit: np.ndarray                    # (Q,) edit name of each query
    arrays: np.ndarray                  # (Q, *spec.shape) uint8, the copy through fit_image
    perceptual: dict                    # name -> (Q, bits/8) packed codes of the copy file
    steps: list = field(default_factory=list)    # (Q,) str: the edit's steps and parameters


def _hash_original(job) -> dict:
    from hashing.images.reader import as_picture

    ref, names = job
    im = as_picture(ref)                          # a database item as the picture its copies are made from
    return {name: hasher(name)(im) for name in names}


def _make_query(job) -> tuple[np.ndarray, dict, str]:
    """(original, edit, rng key, spec, hash names) -> (the copy as the model reads it, hash bits, steps)."""
    from hashing.images.edits import make_copy
    from hashing.images.reader import as_picture, fit_image, load_picture

    ref, edit, key, spec, names = job
    data, steps = make_copy(as_picture(ref), edit, np.random.default_rng(key))
    im = load_picture(data, "copy")
    return fit_image(im, spec), {name: hasher(name)(im) for name in names}, " + ".join(s.label() for s in steps)


def make_queries(refs: list, sources: np.ndarray, edits: tuple[str, ...], spec, names: tuple[str, ...],
                 seed: int, progress: bool = True) -> CopyQueries:
    """One copy per (source, edit); the copy of source i under edit e depends on (seed, i, e) only."""
    from hashing.codes.bits import pack
    from hashing.images.edits import EDITS
    from hashing.core.parallel import fork_map

    jobs = [(refs[s], e, (seed, int(s), EDITS.index(e)), spec, names) for s in sources for e in edits]
    arrays, bits, steps = [], {n: [] for n in names}, []
    for arr, h, st in fork_map(_make_query, jobs, progress, "making copies", "copy"):
        arrays.append(arr)
        steps.append(st)
        for n in names:
            bits[n].append(h[n])
    return CopyQueries(np.repeat(sources, len(edits)), np.tile(np.array(edits), len(sources)), np.stack(arrays),
                       {n: pack(np.stack(b)) for n, b in bits.items()}, steps)


def score(xb: np.ndarray, xq: np.ndarray, source: np.ndarray, edit: np.ndarray, bits: int,
          overall: np.ndarray) -> dict:
    """Rank the database (xb, packed) for every query (xq) and score it; `overall` (Q,) bool marks the
    queries pooled into the overall numbers and the non-copy pairs that set the threshold."""
    from hashing.codes.hamming import distances as hamming_distances

    q = len(xq)
    chunk = max(1, (1 << 23) // len(xb))                     # bounds the (chunk, N) distance and block temporaries
    rr, r1, r10, pos = (np.empty(q) for _ in range(4))
    negatives = np.zeros(bits + 1)                           # non-copy pairs of overall queries, by distance
    for start in range(0, q, chunk):
        stop = min(q, start + chunk)
        D = hamming_distances(xq[start:stop], xb)            # (q, N)
        rows = np.arange(stop - start)
        rel = np.zeros(D.shape, dtype=bool)
        rel[rows, source[start:stop]] = True
        n, r = metrics.hamming_blocks(D, rel, bits)          # (q, bits+1) tie blocks by distance
        rr[start:stop] = metrics.average_precision(n, r)     # one relevant item: E[1 / rank of the source]
        r1[start:stop] = metrics.recall_at_k(n, r, 1)
        r10[start:stop] = metrics.recall_at_k(n, r, 10)
        pos[start:stop] = D[rows, source[start:stop]]
        negatives += (n - r)[overall[start:stop]].sum(axis=0)
    threshold, share = metrics.operating_point(negatives, FPR)

    def summary(mask: np.ndarray) -> dict:
        return {"queries": int(mask.sum()), "recall@1": float(r1[mask].mean()), "recall@10": float(r10[mask].mean()),
                "mAP": float(rr[mask].mean()),
                "tpr@fpr1e-3": float(metrics.true_positive_rate(pos[mask], threshold, share))}
    out = summary(overall)
    out.update(bits=bits, threshold=threshold, non_copy_pairs=int(negatives.sum()))
    out["edits"] = {e: summary(edit == e) for e in dict.fromkeys(edit.tolist())}
    return _rounded(out)


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return round(d, 6) if isinstance(d, float) else d


@dataclass
class CopyReport:
    protocol: dict
    model: dict
    baselines: dict

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "model": self.model, "baselines": self.baselines}

    def table(self) -> str:
        rows = {"model": self.model, **self.baselines}
        width = max(map(len, rows))
        cols = ("bits", *KEYS, "threshold")
        lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>11}" for c in cols)]
        lines.append("-" * len(lines[0]))
        for name, r in rows.items():
            if r.get("recall@1") is None:
                lines.append(f"{name:<{width}}  {r.get('note', 'n/a')}")
                continue
            cells = [f"{r['bits']:>11}", *(f"{r[k]:>11.4f}" for k in KEYS), f"{r['threshold']:>11}"]
            lines.append(f"{name:<{width}}  " + "  ".join(cells))
        edits = list(self.model["edits"])
        lines += ["", "recall@1 per edit", f"{'method':<{width}}  " + "  ".join(f"{e:>10}" for e in edits)]
        for name, r in rows.items():
            if r.get("recall@1") is not None:
                lines.append(f"{name:<{width}}  " + "  ".join(f"{r['edits'][e]['recall@1']:>10.4f}" for e in edits))
        return "\n".join(lines)


DEFAULT_COPIES = 1000


def evaluate_copies(run_dir: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                    images: str | Path | None = None, split: str | None = None, copies: int | None = None,
                    edits=DEFAULT_EDITS, baselines=COPY_BASELINES, seed: int = 0, json_out: str | Path | None = None,
                    plots: str | Path | None = None, device: str = "auto", progress: bool = True) -> CopyReport:
    """The copy-detection table for the model of `run_dir` and the baselines, on one split."""
    from hashing.codes import baselines as B
    from hashing.model import checkpoint
    from hashing.core.atomic import check_output_file, check_output_folder, write_json
    from hashing.model.encode import encode_array
    from hashing.images.datasets import check_source, load_split
    from hashing.model.device import resolve_device
    from hashing.evaluate.classes import baseline_codes, fitting_sample, pixels
    from hashing.images.reader import conform

    edits = check_edits(edits)
    baselines = check_baselines(baselines)
    if copies is not None and copies < 1:
        raise HashingError(f"copies must be at least 1, got {copies}", settings=("copies",))
    if not 0 <= seed < 2**32:
        raise HashingError(f"seed must be in 0..2**32-1, got {seed}", settings=("seed",))
    check_output_file(json_out, "json_out")
    check_output_folder(plots, "plots")
    check_source(dataset, images)
    model = checkpoint.load(run_dir, resolve_device(device)).model
    bits, spec = model.cfg.bits, model.cfg.spec
    if dataset is not None:
        native = load_split(dataset, None, split, "test", data_dir)        # the dataset's own pixels
        db = dataclasses.replace(native, images=conform(native.images, spec))      # the same array at 28x28
        refs = list(native.images)
    else:
        db = load_split(None, images, split, "test", data_dir, spec, progress=progress)
        refs = db.sources
    if len(db) < 2:
        raise HashingError(f"the database needs at least 2 images, {db.name} {db.split} has {len(db)}")
    if copies is None:
        copies = min(DEFAULT_COPIES, len(db))
    elif copies > len(db):
        raise HashingError(f"copies {copies} is more than the {len(db)} images of {db.name} {db.split}; "
                           f"ask for at most {len(db)}", settings=("copies",))
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(len(db), size=copies, replace=False))
    names = tuple(n for n in baselines if n in PERCEPTUAL)
    notes = {}
    for n in names:
        try:
            hasher(n)                                   # the package is there
        except HashingError as e:
            notes[n] = str(e)
    names = tuple(n for n in names if n not in notes)

    t0 = time.perf_counter()
    qs = make_queries(refs, sources, edits, spec, names, seed, progress)
    overall = ~np.isin(qs.edit, SEPARATE) if not set(edits) <= set(SEPARATE) else np.ones(len(qs.edit), bool)
    made = time.perf_counter() - t0
    xb = encode_array(model, db.images, progress=progress, desc="encoding database").codes
    xq = encode_array(model, qs.arrays, progress=progress, desc="encoding copies").codes
    model_scores = score(xb, xq, qs.source, qs.edit, bits, overall)
    model_scores["seconds"] = round(time.perf_counter() - t0 - made, 2)

    base: dict = {}
    if names:
        from hashing.codes.bits import pack
        from hashing.core.parallel import fork_map

        t0 = time.perf_counter()
        hashed = list(fork_map(_hash_original, [(r, names) for r in refs], progress, "hashing database"))
        per_name = (time.perf_counter() - t0) / len(names)
        for n in names:
            t1 = time.perf_counter()
            xb_n = pack(np.stack([h[n] for h in hashed]))
            base[n] = score(xb_n, qs.perceptual[n], qs.source, qs.edit, PERCEPTUAL[n], overall)
            base[n]["seconds"] = round(per_name + time.perf_counter() - t1, 2)
    for n in baselines:
        if n in notes:
            base[n] = {k: None for k in KEYS} | {"note": notes[n]}
        elif n not in PERCEPTUAL:
            t0 = time.perf_counter()
            try:
                fitted = B.make(n, bits, seed).fit(pixels(fitting_sample(db.images)))
            except HashingError as e:
                base[n] = {k: None for k in KEYS} | {"note": str(e)}
                continue
            base[n] = score(baseline_codes(fitted, db.images), baseline_codes(fitted, qs.arrays), qs.source, qs.edit, bits, overall)
            base[n]["seconds"] = round(time.perf_counter() - t0, 2)
    base = {n: base[n] for n in baselines}
    protocol = {"task": "copies", "dataset": dataset or str(images), "database": f"{db.split} ({len(db)})",
                "sources": len(sources), "edits": list(edits), "queries": int(len(qs.edit)), "seed": seed,
                "overall": "every edit except " + ", ".join(SEPARATE) if not overall.all() else "every edit",
                "relevant": "the copy's source only", "ranking": "Hamming distance, whole database",
                "ties": "expectation over random order within tied distances",
                "mAP": "mean reciprocal rank of the source",
                "tpr@fpr1e-3": ("true-positive rate at the Hamming threshold where the false-positive rate over all "
                                "non-copy pairs (each overall query x each database image but its source) is 1e-3"),
                "model": str(Path(run_dir)), "bits": bits, "image": list(spec.shape),
                "seconds making copies": round(made, 2)}
    if db.skipped:
        protocol["files skipped"] = db.skipped
    report = CopyReport(protocol, model_scores, base)
    if json_out is not None:
        write_json(json_out, report.to_json())
    if plots is not None:
        write_copy_plots(report, Path(plots), refs, qs, spec)
    return report


def write_copy_plots(report: CopyReport, out: Path, refs: list, qs: CopyQueries, spec, n_sources: int = 6) -> None:
    """copies_recall.png (recall@1 per edit, every method) and copies_edits.png (sources and their copies)."""
    from hashing.images.reader import as_picture, fit_image
    from hashing.images.plots import bar_groups, copies_grid

    out.mkdir(parents=True, exist_ok=True)
    rows = {"model": report.model, **{n: r for n, r in report.baselines.items() if r.get("recall@1") is not None}}
    edits = list(report.model["edits"])
    bar_groups({m: [r["edits"][e]["recall@1"] for e in edits] for m, r in rows.items()}, edits,
               out / "copies_recall.png", "recall@1", "recall@1 of the source, per edit")
    shown = list(dict.fromkeys(qs.source.tolist()))[:n_sources]
    copies_grid([fit_image(as_picture(refs[s]), spec) for s in shown],
                [[qs.arrays[i] for i in np.flatnonzero(qs.source == s)] for s in shown], out / "copies_edits.png")
