"""`hashing query`: encode pictures with an index's own model and return their neighbours (and a grid)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.core.atomic import check_output_file
from hashing.core.errors import HashingError
from hashing.images.datasets import load_source
from hashing.images.reader import ImageSpec, read_image
from hashing.indexes import BinaryIndex, Hit, open_index
from hashing.indexes.base import search_terms
from hashing.model.checkpoint import load_model_for
from hashing.model.encode import encode_array


@dataclass
class QueryResult:
    image: str
    hits: list[Hit]
    classes: list[str] = field(default_factory=list)    # the index's class names, by label

    def class_of(self, hit: Hit) -> str | None:
        return self.classes[hit.label] if hit.label is not None and 0 <= hit.label < len(self.classes) else None

    def to_dict(self) -> dict:
        """{"image", "results": [{"id", "distance", "label", "source", "class"}]}; class is None unless the
        index was built from class folders."""
        return {"image": self.image, "results": [{**h.to_dict(), "class": self.class_of(h)} for h in self.hits]}


def query_images(paths: list[str | os.PathLike], index_location: str, *, k: int | None = None,
                 radius: int | None = None, collection: str | None = None, invert: bool = False,
                 grid: str | Path | None = None) -> list[QueryResult]:
    """Encode each image with the index's model and return its neighbours: the k nearest (default
    indexes.base.DEFAULT_K, 10), every item within radius, or with both at most k of those within radius. Reads, never writes."""
    k, radius = search_terms(k, radius)
    check_output_file(grid, "grid")
    index = open_index(index_location, collection)
    try:
        return _query(index, paths, k, radius, invert, grid)
    finally:
        index.close()


def _query(index: BinaryIndex, paths, k, radius, invert, grid) -> list[QueryResult]:
    index.check_searchable(None if radius is not None else k, radius)   # before loading the model
    model = load_model_for(index)
    arrays = [read_image(p, model.cfg.spec, invert) for p in paths]  # all read before any work: fail early
    xq = encode_array(model, np.stack(arrays), progress=False).codes
    classes = list(index.info.classes)
    results = [QueryResult(str(p), hits, classes) for p, hits in zip(paths, index.query(xq, k=k, radius=radius))]
    if grid is not None:
        save_grid(results, arrays, index, grid, model.cfg.spec)
    return results


def save_grid(results: list[QueryResult], arrays: list[np.ndarray], index: BinaryIndex, path: str | Path,
              spec: ImageSpec, max_neighbours: int = 16) -> None:
    """A PNG: each query, then its neighbours (read back from their sources at the model's spec)."""
    from hashing.images.plots import retrieval_grid

    neighbours = [[_source_or_blank(h.source, index.info.datasets, spec) for h in r.hits[:max_neighbours]]
                  for r in results]
    retrieval_grid(arrays, neighbours, path)


def _source_or_blank(source: str, datasets: dict, spec: ImageSpec) -> np.ndarray | None:
    """An indexed item's image for a picture; None (a blank cell) when its file is gone."""
    try:
        return load_source(source, datasets, spec)
    except HashingError:
        return None
