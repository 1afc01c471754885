"""`hashing evaluate`: the hashing literature's retrieval protocol, for the model and baselines.

Protocol: every query ranks the whole database; relevant = same label. Hamming methods
rank through a FAISS flat binary index (search with k = N, in query chunks, so memory
stays bounded); the float L2 reference ranks through faiss.IndexFlatL2. Ties are
broken by the expectation over random order within each tied block (hashing.codes.metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hashing.codes import metrics
from hashing.core.errors import HashingError
from hashing.images.folders import memory_budget

DEFAULT_KS = (1, 10, 100, 1000)


@dataclass
class Scores:
    """Per-query sums, turned into means at the end; one per method."""

    sums: dict = field(default_factory=dict)
    pr: np.ndarray | None = None        # (2, bits+1): summed precision and recall within radius 0..bits
    pk_curve: dict = field(default_factory=dict)
    count: int = 0

    def add(self, name: str, values: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())

    def result(self) -> dict:
        return {name: round(v / self.count, 6) for name, v in self.sums.items()}


def rank_all(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], xq: np.ndarray,
             q_labels: np.ndarray, db_labels: np.ndarray, ks=DEFAULT_KS, bits: int | None = None,
             chunk: int = 128, curve_ks: tuple[int, ...] = (), progress: bool = True, desc: str = "ranking") -> Scores:
    """Rank the whole database for every query with `search(xq_chunk, k)` and score it."""
    from tqdm import tqdm

    n_db = len(db_labels)
    ks = tuple(k for k in ks if k <= n_db)
    s = Scores()
    for start in tqdm(range(0, len(xq), chunk), desc=desc, unit="chunk", disable=not progress, dynamic_ncols=True):
        D, I = search(xq[start:start + chunk], n_db)
        rel = db_labels[I] == q_labels[start:start + chunk, None]          # (q, N) in rank order
        if bits is not None:
            n, r = metrics.hamming_blocks(D, rel, bits)                     # blocks by distance
        else:
            n, r = metrics.blocks_from_sorted(D, rel)
        for k in sorted(set(ks) | set(curve_ks)):
            p_k = metrics.precision_at_k(n, r, k)
            if k in ks:
                s.add(f"precision@{k}", p_k)
            if k in curve_ks:
                s.pk_curve[k] = s.pk_curve.get(k, 0.0) + float(p_k.sum())
        s.add("mAP", metrics.average_precision(n, r))
        s.add("mAP@1000", metrics.average_precision(n, r, min(1000, n_db)))
        if bits is not None:
            p, rc = metrics.radius_precision_recall(n, r)
            s.add("precision@r2", p[:, min(2, bits)])
            s.add("recall@r2", rc[:, min(2, bits)])
            pr = np.stack([p.sum(0), rc.sum(0)])
            s.pr = pr if s.pr is None else s.pr + pr
        s.count += len(D)
    return s


def hamming_search(xb: np.ndarray, bits: int):
    """search(xq, k) -> (D int32, I int64) over an exact FAISS binary index of packed codes xb."""
    import faiss

    index = faiss.IndexBinaryFlat(bits)
    index.add(np.ascontiguousarray(xb, dtype=np.uint8))

    def search(xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        D, I = index.search(np.ascontiguousarray(xq, dtype=np.uint8), k)
        return D.astype(np.int32), I.astype(np.int64)
    return search


def l2_search(db: np.ndarray):
    import faiss

    index = faiss.IndexFlatL2(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))

    def search(q, k):
        return index.search(np.ascontiguousarray(q, dtype=np.float32), k)
    return search


@dataclass
class Report:
    protocol: dict
    model: dict
    baselines: dict
    curves: dict            # method -> {"precision_radius", "recall_radius", "pk": {k: p}}

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "model": self.model, "baselines": self.baselines}

    def notes(self) -> list[str]:
        """What the numbers leave out (queries without a class or a match, unreadable files), one line each."""
        return [f"{key}: {value}" for key, value in self.protocol.items() if "left out" in key or "skipped" in key]

    def table(self) -> str:
        rows = {"model": self.model, **self.baselines}
        cols = [c for c in next(iter(rows.values())) if c not in ("seconds",)]
        width = max(len(r) for r in rows)
        head = f"{'method':<{width}}  " + "  ".join(f"{c:>12}" for c in cols)
        lines = [head, "-" * len(head)]
        for name, vals in rows.items():
            cells = []
            for c in cols:
                v = vals.get(c)
                cells.append(f"{'n/a':>12}" if v is None else f"{v:>12.4f}")
            lines.append(f"{name:<{width}}  " + "  ".join(cells))
        return "\n".join(lines)


def score_codes(xb: np.ndarray, xq: np.ndarray, db_labels: np.ndarray, q_labels: np.ndarray, bits: int,
                ks=DEFAULT_KS, progress: bool = True, desc: str = "ranking") -> tuple[dict, Scores]:
    curve_ks = _curve_ks(len(db_labels))
    s = rank_all(hamming_search(xb, bits), xq, q_labels, db_labels, ks, bits, curve_ks=curve_ks,
                 progress=progress, desc=desc)
    return s.result(), s


def _curve_ks(n_db: int) -> tuple[int, ...]:
    ks, k = [], 1
    while k <= n_db:
        ks.append(k)
        k *= 2
    return tuple(ks)


def _curves(s: Scores) -> dict:
    out = {"pk": {k: v / s.count for k, v in s.pk_curve.items()}}
    if s.pr is not None:
        out["precision_radius"] = (s.pr[0] / s.count).tolist()
        out["recall_radius"] = (s.pr[1] / s.count).tolist()
    return out


def evaluate(run_dir: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
             database_split: str = "train", query_split: str = "test", ks=None,
             baselines=("lsh", "pcah", "itq", "l2"), plots: str | Path | None = None, device: str = "auto",
             progress: bool = True, seed: int = 0, json_out: str | Path | None = None,
             images: str | Path | None = None) -> Report:
    """The table: the model's codes beside each baseline at the same bit count, on the same data
    (written to `json_out` as JSON, and drawn into the folder `plots`, when given).

    The data are a built-in `dataset` or an image folder `images` with train/ and test/
    folders (the database and the queries). Relevance is the same label: unlabelled queries
    (files in the root of test/) are left out and counted, unlabelled database items are
    relevant to no query."""
    from hashing.core.atomic import check_output_file, check_output_folder, write_json
    from hashing.codes import baselines as B
    from hashing.model import checkpoint
    from hashing.model.encode import encode_array
    from hashing.images.datasets import check_source, load_split
    from hashing.model.device import resolve_device

    baselines = B.check_names(baselines)
    if database_split == query_split:
        raise HashingError(f"database_split and query_split are both {query_split}: every query would find "
                           f"itself; choose two different splits", settings=("database_split", "query_split"))
    check_output_file(json_out, "json_out")
    check_output_folder(plots, "plots")
    check_source(dataset, images)
    if images is not None:
        from hashing.images.folders import layout

        if not layout(images).has_splits:
            raise HashingError(f"evaluate needs {Path(images) / 'train'} (the database) and "
                               f"{Path(images) / 'test'} (the queries); {images} has no such folders")
    model = checkpoint.load(run_dir, resolve_device(device)).model
    bits, spec = model.cfg.bits, model.cfg.spec
    db = load_split(dataset, images, database_split, database_split, data_dir, spec, progress=progress)
    qs = load_split(dataset, images, query_split, query_split, data_dir, spec, progress=progress)
    if ks is None:
        ks = tuple(k for k in DEFAULT_KS if k <= len(db))            # the defaults that this database can answer
    elif max(ks) > len(db):
        raise HashingError(f"ks {max(ks)} is more than the database's {len(db)} images ({database_split}); "
                           f"ask for at most {len(db)}", settings=("ks",))
    q_rows, no_match = answerable(qs.labels, db.labels, query_split, database_split)
    q_images, q_labels = qs.images[q_rows] if len(q_rows) < len(qs) else qs.images, qs.labels[q_rows]
    db_labels = np.where(db.labels >= 0, db.labels, -2)          # -2 equals no query's label
    protocol = {"dataset": dataset or str(images), "database": f"{database_split} ({len(db)})",
                "queries": f"{query_split} ({len(q_rows)})", "bits": bits, "image": list(spec.shape),
                "relevance": "same label", "ranking": "Hamming distance, whole database",
                "ties": "expectation over random order within tied blocks",
                "mAP": "over the whole ranking; mAP@1000 divides by min(R, 1000)",
                "radius": "precision/recall within Hamming distance 2 (precision 0 when nothing retrieved)",
                "model": str(Path(run_dir)), "ks": list(ks)}
    if (qs.labels < 0).any():
        protocol["unlabelled queries left out"] = int((qs.labels < 0).sum())
    if no_match:
        protocol["queries left out: their class has no database image"] = no_match
    for split in (db, qs):
        if split.skipped:
            protocol[f"{split.split} files skipped"] = split.skipped
    t0 = time.perf_counter()
    xb = encode_array(model, db.images, progress=progress, desc="encoding database").codes
    xq = encode_array(model, q_images, progress=progress, desc="encoding queries").codes
    model_scores, s = score_codes(xb, xq, db_labels, q_labels, bits, ks, progress, desc="ranking model")
    model_scores["seconds"] = round(time.perf_counter() - t0, 2)
    curves = {"model": _curves(s)}

    base_scores: dict = {}
    for name in baselines:
        t0 = time.perf_counter()
        if name == "l2":
            need = len(db) * int(np.prod(spec.shape)) * 4
            if need > memory_budget():
                base_scores[name] = {k: None for k in model_scores if k != "seconds"}
                base_scores[name]["note"] = (f"skipped: exact float search needs {need / 2**30:.1f} GiB of pixels "
                                             f"(over HASHING_MEMORY_BUDGET)")
                continue
            sc = rank_all(l2_search(pixels(db.images)), pixels(q_images), q_labels, db_labels, ks, None,
                          curve_ks=_curve_ks(len(db)), progress=progress, desc="ranking l2")
            res = sc.result()
            res.update({"precision@r2": None, "recall@r2": None})
        else:
            try:
                hasher = B.make(name, bits, seed).fit(pixels(fitting_sample(db.images)))
            except HashingError as e:
                base_scores[name] = {k: None for k in model_scores if k != "seconds"}
                base_scores[name]["note"] = str(e)
                continue
            res, sc = score_codes(baseline_codes(hasher, db.images), baseline_codes(hasher, q_images), db_labels, q_labels, bits,
                                  ks, progress, desc=f"ranking {name}")
        res["seconds"] = round(time.perf_counter() - t0, 2)
        base_scores[name] = res
        curves[name] = _curves(sc)
    report = Report(protocol, model_scores, base_scores, curves)
    if json_out is not None:
        write_json(json_out, report.to_json())
    if plots is not None:
        write_plots(report, Path(plots), model, db, q_images, q_labels, xb, xq)
    return report


def answerable(q_labels: np.ndarray, db_labels: np.ndarray, query_split: str = "test",
               database_split: str = "train") -> tuple[np.ndarray, int]:
    """(rows of the queries that can be scored, how many labelled queries were left out because their
    class has no image in the database). A query with no relevant item has no precision to average: a
    mAP over such queries would measure nothing, so they are left out and counted; when no query is left
    (classes of one image, every picture its own folder), that is an error, not a number."""
    labelled = q_labels >= 0
    if not labelled.any():
        raise HashingError(f"no labelled queries: evaluate needs the {query_split} images in class folders")
    matched = labelled & np.isin(q_labels, db_labels[db_labels >= 0])
    if not matched.any():
        raise HashingError(f"no query's class has an image in the database ({database_split}): mAP needs classes "
                           f"of at least 2 images, one in {database_split}/ and one in {query_split}/ "
                           f"(a folder of one picture per class cannot be scored by label)")
    return np.flatnonzero(matched), int(labelled.sum() - matched.sum())


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, D) in [0, 1]: what the baselines hash."""
    return np.asarray(images).reshape(len(images), -1).astype(np.float32) / 255.0


def fitting_sample(images: np.ndarray, n: int = 20_000) -> np.ndarray:
    """At most n images, evenly spread: the baselines' training set (all of a split that small)."""
    return images if len(images) <= n else images[::-(-len(images) // n)]


def baseline_codes(hasher, images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    return np.concatenate([hasher.codes(pixels(images[i:i + chunk])) for i in range(0, len(images), chunk)])


def write_plots(report: Report, out: Path, model, db, q_images, q_labels, xb, xq, n_queries: int = 8,
                k: int = 12) -> None:
    """PR curves over Hamming radii, precision@k vs k, and a retrieval grid."""
    from hashing.images.plots import line_plot, retrieval_grid

    out.mkdir(parents=True, exist_ok=True)
    pr = {m: (c["recall_radius"], c["precision_radius"]) for m, c in report.curves.items() if "recall_radius" in c}
    line_plot(pr, out / "pr_curve.png", "recall", "precision", "precision-recall over Hamming radius 0..bits")
    pk = {m: (list(c["pk"]), list(c["pk"].values())) for m, c in report.curves.items()}
    line_plot(pk, out / "precision_at_k.png", "k", "precision@k", "precision@k", logx=True)
    search = hamming_search(xb, model.cfg.bits)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(xq), size=min(n_queries, len(xq)), replace=False)
    _, I = search(xq[pick], min(k, len(db)))
    retrieval_grid([q_images[i] for i in pick], [[db.images[j] for j in row] for row in I], out / "retrieval.png",
                   match=[[bool(db.labels[j] == q_labels[i]) for j in row] for i, row in zip(pick, I)])
