"""What earlier versions wrote still opens and means the same (issue 49: the code moved, nothing on disk
changed). tests/data/old_indexes/ holds FAISS indexes written by the code of earlier commits
(tests/data/make_old_indexes.py says which and how); tests/data/legacy28 is a run folder from before
image folders existed (tests/test_folders.py encodes with it)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from hashing.indexes import open_index

DATA = Path(__file__).parent / "data" / "old_indexes"


@pytest.mark.parametrize("name, fmt", [("faiss1", "hashing-index/1"), ("faiss2", "hashing-index/2")])
def test_an_index_written_by_an_earlier_format_opens_searches_and_takes_a_write(tmp_path, name, fmt):
    import json

    assert json.loads((DATA / name / "meta.json").read_text())["format"] == fmt
    xb = np.load(DATA / f"{name}_xb.npy")
    where = tmp_path / name
    shutil.copytree(DATA / name, where)
    with open_index(str(where)) as index:
        assert index.count == 40 and index.bits == 64
        assert index.info.model.fingerprint == "59a07c23d30ef861" and index.info.classes == ["even", "odd"]
        D, I = index.search(xb, 1)
        assert I[:, 0].tolist() == list(range(40)) and not D.any()
        ids, labels, sources, _ = index.items()
        assert ids.tolist() == list(range(40)) and labels.tolist() == [i % 2 for i in range(40)]
        assert sources[7] == "item07.png"
        index.remove(np.array([3]))
        index.save()
    with open_index(str(where)) as index:            # rewritten in today's format, the same items
        assert index.count == 39 and 3 not in index.items()[0].tolist()
        assert index.search(xb[5:6], 1)[1][0, 0] == 5


def test_the_oldest_run_folder_still_loads_with_its_recorded_image_rules():
    from hashing.model import checkpoint

    ckpt = checkpoint.load(Path(__file__).parent / "data" / "legacy28", "cpu")
    cfg = ckpt.model.cfg
    assert (cfg.image_size, cfg.resize, cfg.background, cfg.exif) == (28, "stretch", "black", False)
