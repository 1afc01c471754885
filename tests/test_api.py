"""The Python API: the README's example runs as written, and encode takes every kind of image alike."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hashing
from hashing.images.datasets import load_dataset


@pytest.mark.slow                   # the example trains a model (2 epochs) and checks what it finds
def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    agree = 0
    for line in lines:
        label, neighbours = re.match(r"(\d+) \[([\d, ]+)\]", line).groups()
        agree += sum(int(x) == int(label) for x in neighbours.split(","))
    assert agree >= 15                     # most of the 25 neighbours share the query's digit


def test_encode_takes_paths_pil_images_and_arrays_alike(digits_run, digits_index, tmp_path):
    model = hashing.load(digits_run)
    images = load_dataset("digits", "test").images[:3]
    Image.fromarray(images[0]).resize((56, 56)).convert("RGB").save(tmp_path / "a.jpg", quality=100)
    batch = model.encode(images)
    assert batch.shape == (3, model.bits // 8) and batch.dtype == np.uint8
    one = [model.encode(images[i]) for i in range(3)]
    assert all(np.array_equal(batch[i:i + 1], one[i]) for i in range(3))
    assert np.array_equal(model.encode([Image.fromarray(images[1])]), batch[1:2])
    from hashing.workflows.query import query_images
    via_cli = query_images([tmp_path / "a.jpg"], str(digits_index), k=3)[0].hits
    index = hashing.open_index(str(digits_index))
    D, I = index.search(model.encode(tmp_path / "a.jpg"), 3)
    assert [h.id for h in via_cli] == I[0].tolist() and [h.distance for h in via_cli] == D[0].tolist()
