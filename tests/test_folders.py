"""Image folders: layout, the one image-fitting function, the decode cache and memory budget,
the model at other sizes and in colour, and train -> index -> query -> evaluate through the
console script on folders the tests write from scikit-learn's digits."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error, write_digit_folder
from hashing.images import folders
from hashing.core.errors import HashingError
from hashing.images.reader import ImageSpec, fit_image, read_image


@pytest.fixture(scope="session")
def gray_folder(tmp_path_factory):
    return write_digit_folder(tmp_path_factory.mktemp("gray") / "digits", limit=300)


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    """Random foreground/background colours and random sizes, as JPEG: colour, resize and crop all run."""
    return write_digit_folder(tmp_path_factory.mktemp("colour") / "digits", colour=True, random_sizes=True,
                              limit=300, seed=1, suffix=".jpg")


# ---- layout ------------------------------------------------------------------------------------

def test_layout_classes_splits_and_unlabelled_root_files(tmp_path):
    for rel in ("cats/a.png", "cats/deep/b.png", "dogs/c.png", "loose.png", ".hidden/x.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / rel) if rel.endswith(".png") else (tmp_path / rel).write_text("x")
    lay = folders.layout(tmp_path)
    assert not lay.has_splits and lay.classes == ["cats", "dogs"]
    paths, labels = folders.labelled_files(lay, folders.choose_split(lay, None, "train"))
    got = {p.relative_to(tmp_path).as_posix(): int(y) for p, y in zip(paths, labels)}
    # first folder below the root is the class, however deep the file; root files are -1; hidden skipped
    assert got == {"cats/a.png": 0, "cats/deep/b.png": 0, "dogs/c.png": 1, "loose.png": -1}
    with pytest.raises(HashingError, match="no train/ and test/ folders"):
        folders.choose_split(lay, "test", "train")


def test_split_folders_share_class_numbers(tmp_path):
    for rel in ("train/b/1.png", "train/c/2.png", "test/a/3.png", "test/c/4.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / rel)
    lay = folders.layout(tmp_path)
    assert lay.has_splits and lay.classes == ["a", "b", "c"]      # union of both splits
    assert folders.labelled_files(lay, "train")[1].tolist() == [1, 2]
    assert folders.labelled_files(lay, "test")[1].tolist() == [0, 2]


# ---- fitting one image -------------------------------------------------------------------------

def test_crop_pad_stretch_on_a_wide_image():
    # 60x20: left third black, middle third white, right third gray
    arr = np.zeros((20, 60), np.uint8)
    arr[:, 20:40], arr[:, 40:] = 255, 128
    im = Image.fromarray(arr)
    crop = fit_image(im, ImageSpec(20, 1, "crop"))
    assert crop.shape == (20, 20) and crop[:, 2:18].min() == 255       # the centred square: all white
    pad = fit_image(im, ImageSpec(30, 1, "pad"))
    assert pad.shape == (30, 30) and pad[:4].max() == 0 and pad[-4:].max() == 0    # black bars above and below
    assert pad[15, 14] == 255 and abs(int(pad[15, 27]) - 128) <= 2                 # whole width kept
    stretch = fit_image(im, ImageSpec(30, 1, "stretch"))
    assert stretch.shape == (30, 30) and stretch[:, 0].max() == 0 and abs(int(stretch[0, 29]) - 128) <= 2
    square = Image.fromarray(arr[:, :20] + 7)
    assert all((fit_image(square, ImageSpec(10, 1, r)) == fit_image(square, ImageSpec(10, 1, "crop"))).all()
               for r in ("pad", "stretch"))                                         # squares: all rules agree


def test_modes_to_gray_and_colour(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200                                   # pure red
    im = Image.fromarray(rgb)
    colour = fit_image(im, ImageSpec(16, 3))
    assert colour.shape == (16, 16, 3) and (colour[..., 0] == 200).all() and colour[..., 1:].max() == 0
    assert (fit_image(im, ImageSpec(16, 1)) == round(200 * 0.299)).all()          # ITU-R 601 luma
    gray = fit_image(Image.new("L", (16, 16), 90), ImageSpec(16, 3))
    assert gray.shape == (16, 16, 3) and (gray == 90).all()                      # replicated
    # 16-bit: scaled, not clipped; transparency: on white (on black for models from before the rule was recorded)
    wide = Image.fromarray(np.full((16, 16), 65535 // 2, np.uint16))
    wide.save(tmp_path / "w16.png")
    assert abs(int(read_image(tmp_path / "w16.png", ImageSpec(16, 3))[0, 0, 0]) - 127) <= 1
    rgba = Image.new("RGBA", (16, 16), (255, 255, 255, 0))
    assert fit_image(rgba, ImageSpec(16, 3)).min() == 255
    assert fit_image(rgba, ImageSpec(16, 3, background="black")).max() == 0
    # palette GIF with several frames: the first frame
    frames = [Image.new("P", (16, 16), c) for c in (1, 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert tuple(read_image(tmp_path / "a.gif", ImageSpec(16, 3))[0, 0]) == (255, 0, 0)
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg", ImageSpec(16, 3))[8, 8, 0] > 200          # CMYK red -> RGB red


def test_inspect_detects_gray_colour_and_size(tmp_path, gray_folder, colour_folder):
    paths, _ = folders.labelled_files(folders.layout(gray_folder), "train")
    assert folders.inspect(paths) == (28, 1)
    paths, _ = folders.labelled_files(folders.layout(colour_folder), "train")
    size, channels = folders.inspect(paths)
    assert channels == 3 and 20 <= size <= 32
    # RGB files whose channels agree are grayscale; big photos are capped at 32
    for i in range(3):
        Image.fromarray(np.full((300, 400, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.jpg")
    assert folders.inspect(sorted(tmp_path.glob("*.jpg"))) == (32, 1)
    # a decompression bomb in the sample is refused from its header, not decoded (nor warned about)
    import warnings

    Image.new("1", (10000, 10000)).save(tmp_path / "bomb.png")             # 100 megapixels: over Pillow's 89
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert folders.inspect(sorted(tmp_path.glob("*.*"))) == (32, 1)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# ---- the model at other sizes and in colour -----------------------------------------------------

@pytest.mark.parametrize("size", [16, 28, 32, 64, 100, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_model_geometry_follows_the_size(size, channels):
    from hashing.model.network import HashAutoencoder
    from hashing.model.config import HashConfig, stages

    model = HashAutoencoder(HashConfig(bits=16, width=4, image_size=size, channels=channels)).eval()
    x = torch.randn(2, channels, size, size)
    z, code, recon = model(x)
    assert z.shape == (2, 16) and recon.shape == x.shape
    assert stages(size)[-1] <= 4 and (size != 28 or stages(size) == [28, 14, 7, 3])


def test_legacy_checkpoint_gives_todays_codes():
    """A run folder made before folders existed (tests/data/make_legacy28.py) encodes exactly as it did."""
    from pathlib import Path

    from hashing.model import checkpoint
    from hashing.model.encode import encode_array
    from hashing.images.datasets import load_dataset

    data = Path(__file__).parent / "data"
    ckpt = checkpoint.load(data / "legacy28", "cpu")
    assert ckpt.config.resize == "stretch" and ckpt.config.spec == ImageSpec(28, 1, "stretch", "black", exif=False)
    want = np.load(data / "legacy28_codes.npz")
    got = encode_array(ckpt.model, load_dataset("digits", "test").images[:64], progress=False).codes
    assert (got == want["digits_test_64"]).all()
    files = np.stack([read_image(data / n, ckpt.config.spec) for n in ("legacy_wide.png", "legacy_rgb.png")])
    assert (encode_array(ckpt.model, files, progress=False).codes == want["files"]).all()


def test_photo_views_keep_shape_and_vary():
    from hashing.train.views import random_photo, resolve_views

    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    x = (torch.rand(8, 3, 32, 32, generator=g) - mean) / std
    a, b = random_photo(x, mean, std, generator=g), random_photo(x, mean, std, generator=g)
    assert a.shape == x.shape and not torch.allclose(a, b)
    pixels = a * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5          # still images in [0, 1]
    assert random_photo(x[:, :1], 0.5, 0.5, generator=g).shape == (8, 1, 32, 32)
    assert resolve_views("auto", "images", 3) == "photo" and resolve_views("auto", "images", 1) == "crop"
    assert resolve_views("auto", "mnist", 1) == "affine"


def test_a_file_reached_twice_by_a_link_is_one_file(tmp_path):
    import os

    root = write_digit_folder(tmp_path / "d", limit=12)
    before, labels = folders.labelled_files(folders.layout(root), "train")
    target = before[3]
    os.symlink(target.resolve(), target.parent.parent / before[0].parent.name / "zz-link.png")
    os.symlink(tmp_path / "nowhere.png", target.parent / "dangling.png")       # a broken link is no file
    (target.parent / ".hidden.png").write_bytes(b"")                          # nor a hidden one
    after, after_labels = folders.labelled_files(folders.layout(root), "train")
    assert after == before and (after_labels == labels).all()                  # the link is its target, once
    files, keys, _ = folders.split_files(folders.layout(root), "train")
    assert keys == [os.path.realpath(f) for f in files] and len(set(keys)) == len(keys)


# ---- decode once: the cache and the memory budget -----------------------------------------------

def test_cache_decodes_once_and_notices_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHING_CACHE", str(tmp_path / "cache"))
    root = write_digit_folder(tmp_path / "d", limit=20)
    paths, labels = folders.labelled_files(folders.layout(root), "train")
    spec = ImageSpec(32, 1, "crop")
    first = folders.read_folder(paths, labels, spec, progress=False)
    assert first.images.shape == (20, 32, 32) and first.in_memory

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")
    monkeypatch.setattr(folders, "decode_files", no_decoding)
    again = folders.read_folder(paths, labels, spec, progress=False)
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    monkeypatch.undo()
    monkeypatch.setenv("HASHING_CACHE", str(tmp_path / "cache"))
    # a changed file is a new key: decoded again, with the new pixels
    Image.new("L", (28, 28), 255).save(paths[0])
    changed = folders.read_folder(paths, labels, spec, progress=False)
    assert changed.images[0].min() == 255 and (changed.images[1:] == first.images[1:]).all()
    # over the budget: a read-only memory map of the same bytes
    monkeypatch.setenv("HASHING_MEMORY_BUDGET", "0")
    mapped = folders.read_folder(paths, labels, spec, progress=False)
    assert not mapped.in_memory and isinstance(mapped.images, np.memmap) and (mapped.images == changed.images).all()


def test_a_killed_decode_leaves_no_cache_to_trust(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHING_CACHE", str(tmp_path / "cache"))
    root = write_digit_folder(tmp_path / "d", limit=10)
    paths, labels = folders.labelled_files(folders.layout(root), "train")
    real = folders.decode_files

    def dies_halfway(*a, **k):
        for i, item in enumerate(real(*a, **k)):
            if i == 5:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(folders, "decode_files", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        folders.read_folder(paths, labels, ImageSpec(28), progress=False)
    left = [f.name for f in (tmp_path / "cache").rglob("*")                                 # every job's folder
            if f.is_file() and not f.name.startswith("digits-")]                            # (datasets._digits)
    assert left == []                                                  # the temporary array is gone too
    monkeypatch.setattr(folders, "decode_files", real)
    assert len(folders.read_folder(paths, labels, ImageSpec(28), progress=False).images) == len(paths)


def test_streamed_training_is_the_in_memory_training(tmp_path, monkeypatch):
    """Over the memory budget each batch is gathered from the map: the very same batches, so the same weights."""
    from hashing.train.loop import train_on

    monkeypatch.setenv("HASHING_CACHE", str(tmp_path / "cache"))
    root = write_digit_folder(tmp_path / "d", limit=200)
    kw = dict(progress=False, bits=16, width=8, epochs=1, seed=3, device="cpu")
    a = train_on("default", tmp_path / "mem", images=root, **kw)
    monkeypatch.setenv("HASHING_MEMORY_BUDGET", "0")
    b = train_on("default", tmp_path / "stream", images=root, **kw)
    fp = [json.loads((tmp_path / r / "config.json").read_text())["fingerprint"] for r in ("mem", "stream")]
    assert fp[0] == fp[1] and a.history["epoch_loss"] == b.history["epoch_loss"]


# ---- through the console script ----------------------------------------------------------------

def test_gray_folder_train_index_query_evaluate(tmp_path, gray_folder, hashing_cli):
    (gray_folder / "train" / "three" / "broken.png").write_bytes(b"not a png")
    run, idx = tmp_path / "run", tmp_path / "idx"
    code, out, err = hashing_cli("train", "--images", gray_folder, "--out", run, "--bits", 32, "--epochs", 3,
                                 "--quiet")
    assert code == 0, err
    assert "skipped 1 unreadable file(s)" in out and "broken.png" in out and "28x28, 1 channel" in out
    cfg = json.loads((run / "config.json").read_text())["model"]
    assert (cfg["image_size"], cfg["channels"], cfg["resize"], cfg["dataset"]) == (28, 1, "crop", "images")
    assert len(cfg["mean"]) == 1 and 0.05 < cfg["mean"][0] < 0.4           # measured on the folder: dark digits
    code, out, err = hashing_cli("index", "--model", run, "--images", gray_folder, "--out", idx, "--quiet")
    assert code == 0 and "indexed 300 items" in out and "skipped 1 unreadable" in out, err     # 301 files
    query = sorted((gray_folder / "test" / "seven").glob("*.png"))[0]
    code, out, err = hashing_cli("query", query, "--index", idx, "-k", 5, "--json")
    assert code == 0, err
    hits = json.loads(out)[0]["results"]
    assert len(hits) == 5 and [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert sum(h["class"] == "seven" for h in hits) >= 3                      # class names come back
    code, out, err = hashing_cli("evaluate", "--model", run, "--images", gray_folder, "--baselines", "lsh",
                                 "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["protocol"]["queries"].startswith("test (")
    assert report["model"]["mAP"] > 0.3 and report["model"]["precision@10"] > 0.6   # chance is 0.1


def test_colour_folder_at_32_and_64_round_trips(tmp_path, colour_folder, hashing_cli):
    import hashing

    for size in (32, 64):
        run, idx = tmp_path / f"run{size}", tmp_path / f"idx{size}"
        code, out, err = hashing_cli("train", "--images", colour_folder, "--out", run, "--bits", 16, "--epochs", 1,
                                     "--image-size", size, "--max-images", 32, "--quiet")      # weights: any will do
        assert code == 0 and f"{size}x{size}, 3 channels" in out, err
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model"]["channels"] == 3 and len(cfg["model"]["std"]) == 3
        assert cfg["train"]["objective"]["views"] == "photo"
        code, out, err = hashing_cli("index", "--model", run, "--images", colour_folder, "--split", "test",
                                     "--out", idx, "--quiet")
        assert code == 0, err
        # the checkpoint rebuilds its preprocessing: the API's codes of a file are the index's codes of it
        files = sorted((colour_folder / "test").rglob("*.jpg"))
        model = hashing.load(run, device="cpu")
        assert model.arrays(files[:1]).shape == (1, size, size, 3)
        with hashing.open_index(str(idx)) as index:
            D, I = index.search(model.encode(files[:3]), 1)
            assert D[:, 0].tolist() == [0, 0, 0]
            as_pil = model.encode([Image.open(f) for f in files[:3]])
            assert (as_pil == model.encode(files[:3])).all()
    code, out, err = hashing_cli("evaluate", "--model", tmp_path / "run32", "--images", colour_folder,
                                 "--baselines", "itq", "--quiet")
    assert code == 0 and "itq" in out, err


def test_encode_a_folder_writes_sources_and_classes(tmp_path, gray_folder, digits_run, hashing_cli):
    code, out, err = hashing_cli("encode", "--model", digits_run, "--images", gray_folder, "--out",
                                 tmp_path / "c.npz", "--quiet")
    assert code == 0, err
    z = np.load(tmp_path / "c.npz")
    assert len(z["codes"]) == len(z["labels"]) == len(z["sources"]) == 300               # the test split
    assert all("/test/" in s for s in z["sources"]) and list(z["classes"])[:2] == ["eight", "five"]
    assert (z["classes"][z["labels"]] == [s.split("/")[-2] for s in z["sources"]]).all()


@pytest.mark.parametrize("args, message", [
    (["train", "--images", "{missing}", "--out", "{tmp}/r"], "not a folder"),
    (["train", "--images", "{gray}", "--dataset", "digits", "--out", "{tmp}/r"], "exactly one of --dataset or --images"),
    (["train", "--images", "{gray}", "--image-size", "8", "--out", "{tmp}/r"], "--image-size"),
    (["train", "--images", "{gray}", "--image-size", "1000", "--out", "{tmp}/r"], "--image-size"),
    (["train", "--images", "{unsplit}", "--recipe", "supervised", "--out", "{tmp}/r"], "needs labels"),
    (["train", "--images", "{junk}", "--out", "{tmp}/r"], "could be read"),
    (["index", "--model", "{run}", "--images", "{unsplit}", "--split", "test", "--out", "{tmp}/i"], "no --split test"),
    (["evaluate", "--model", "{run}", "--images", "{unsplit}"], "needs"),
    (["index", "--model", "{run}", "--images", "{junk}", "--out", "{tmp}/i", "--strict"], "not a readable image"),
])
def test_folder_errors_are_one_line(tmp_path, gray_folder, digits_run, hashing_cli, args, message):
    unsplit, junk = tmp_path / "unsplit", tmp_path / "junk"
    unsplit.mkdir()
    for i in range(4):
        Image.new("L", (10, 10), 30 * i).save(unsplit / f"{i}.png")            # root files: no labels
    (junk / "a").mkdir(parents=True)
    (junk / "a" / "x.png").write_bytes(b"\x89PNG garbage")
    (junk / "a" / "y.jpg").write_text("hello")
    subs = {"{missing}": str(tmp_path / "nope"), "{tmp}": str(tmp_path), "{gray}": str(gray_folder),
            "{unsplit}": str(unsplit), "{junk}": str(junk), "{run}": str(digits_run)}
    argv = [a for a in args]
    for k, v in subs.items():
        argv = [a.replace(k, v) for a in argv]
    code, out, err = hashing_cli(*argv, "--quiet") if argv[0] != "evaluate" else hashing_cli(*argv)
    assert message in one_line_error(code, err)


def test_unwritable_cache_is_one_line(tmp_path, gray_folder, hashing_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = hashing_cli("train", "--images", gray_folder, "--out", tmp_path / "r", "--quiet",
                                 env={**__import__("os").environ, "HASHING_CACHE": str(blocker / "sub")})
    assert "HASHING_CACHE" in one_line_error(code, err)


def _blas_threads(_job) -> int:
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)


def test_fork_map_workers_run_one_blas_thread_each():
    # OpenBLAS's pool inherited across fork made each np.dot in a worker ~20x slower than in the
    # parent: the pixel check of `hashing duplicates` spent 95 % of its time there (463 s of 481).
    from hashing.core import parallel

    jobs = list(range(parallel.PARALLEL_FROM))
    assert set(parallel.fork_map(_blas_threads, jobs, progress=False)) == {1}
