"""`hashing duplicates`: groups that never chain, the threshold a copies model calibrates when it is
trained, JSON/CSV/HTML outputs, bad files skipped with a reason, and moves that a kill -9 cannot lose
(a real subprocess killed at each step of the move, then undone). The command runs in-process (conftest's
run_hashing) except where a real process is what is tested."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run_hashing, run_hashing_process
from hashing.core.errors import HashingError

EVIL = "<img src=x onerror=window.pwned=1>.png"


def test_star_groups_never_chain():
    from hashing.codes.grouping import pairs_within, star_groups

    # A-B at 4, B-C at 4, A-C at 8: with T = 5 the chain A~B~C is not one group of three.
    bits = np.zeros((4, 64), np.uint8)
    bits[1, :4] = 1
    bits[2, :8] = 1
    bits[3, 32:] = 1                                      # far from all
    codes = np.packbits(bits, axis=1)
    i, j, d = pairs_within(codes, 5)
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist())) == [(0, 1, 4), (1, 2, 4)]
    groups = star_groups(4, i, j)
    assert len(groups) == 1 and groups.centres[0] == 1 and sorted(groups.members[0].tolist()) == [0, 1, 2]
    i, j, _ = pairs_within(codes, 4)
    # with the centre's tie broken by priority, every member is within T of the centre
    groups = star_groups(4, i, j, priority=np.array([0, 1, 2, 3]))
    for c, m in zip(groups.centres, groups.members):
        assert np.bitwise_count(codes[m] ^ codes[c]).sum(axis=1).max() <= 4


def test_pairs_match_brute_force(rng):
    from hashing.codes.grouping import pairs_within
    from hashing.codes.hamming import distances as hamming_distances

    codes = rng.integers(0, 256, (700, 8), dtype=np.uint8)
    codes[350:] = codes[:350] ^ (rng.random((350, 8)) < 0.02).astype(np.uint8) * rng.integers(1, 256, (350, 8), dtype=np.uint8)
    codes[:20] = codes[20:40]                                 # buckets with several codes
    D = hamming_distances(codes, codes)
    for t in (0, 3, 12):
        want = {(a, b) for a, b in zip(*np.nonzero(D <= t)) if a < b}
        for method in ("flat", "mih"):                        # the scan and multi-index hashing: both exact
            i, j, d = pairs_within(codes, t, chunk=100, method=method)
            assert len(i) == len(want) and set(zip(i.tolist(), j.tolist())) == want, (t, method)
            assert (d == D[i, j]).all()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Digits with edited copies (truth: {file: source}), bad files, and a symlink to a file."""
    from PIL import Image

    from hashing.images.datasets import load_dataset
    from hashing.images.edits import make_copy

    root = tmp_path_factory.mktemp("dups") / "pics"
    ds = load_dataset("digits", "test").head(60)
    truth = {}
    for k, im in enumerate(ds.images):
        folder = root / f"set{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(im).resize((64, 64), Image.BILINEAR)
        big.save(folder / f"{k:03d}.png")
        truth[str(folder / f"{k:03d}.png")] = k
        if k < 12:
            data, _ = make_copy(big, ("jpeg", "rescale", "brightness")[k % 3], np.random.default_rng(k))
            copy = root / "copies" / f"copy-{k:03d}.{'jpg' if k % 3 == 0 else 'png'}"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(data)
            truth[str(copy)] = k
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    (bad / "cut.png").write_bytes((root / "set0" / "000.png").read_bytes()[:60])
    Image.new("1", (10000, 10000)).save(bad / "bomb.png")            # 100 megapixels: refused unread
    os.symlink(root / "set0" / "000.png", root / "set1" / "link.png")
    evil = root / "set1" / EVIL                               # an exact copy of digit 1, named like HTML
    evil.write_bytes((root / "set1" / "001.png").read_bytes())
    truth[str(evil)] = 1
    return root, truth


def test_phash_run_groups_skips_and_writes(collection, tmp_path):
    root, truth = collection
    out, table = tmp_path / "d.json", tmp_path / "d.csv"
    code, stdout, stderr = run_hashing("duplicates", "pics", "pics/set0", "--hash", "phash", "--quiet",
                                       "--threshold", "4", "--json", out, "--csv", table, cwd=root.parent)
    assert code == 0, stderr
    found = json.loads(out.read_text())
    assert found["threshold"] == 4 and found["hash"] == "phash"
    reasons = {Path(s["path"]).name: s["reason"] for s in found["skipped"]}
    assert set(reasons) == {"empty.png", "text.jpg", "cut.png", "bomb.png"}
    assert "too large" in reasons["bomb.png"] and all(name in line for name, line in reasons.items())
    assert found["files"] == len(truth)                    # the symlink and set0 given twice: each file once
    assert "path(s) led to a file already seen" in stdout
    paths = [f["path"] for g in found["groups"] for f in g["files"]]
    assert len(paths) == len(set(paths))
    for g in found["groups"]:
        assert sum(f["keep"] for f in g["files"]) == 1
        assert all(f["distance"] <= 2 * found["threshold"] for f in g["files"])
        assert all(f["path"].startswith("pics/") for f in g["files"])       # as given
    rows = table.read_text().splitlines()
    assert rows[0] == "group,path,distance,keep" and len(rows) == 1 + len(paths)
    assert "files in groups" in stdout.splitlines()[-3]


def test_bad_input_is_one_line(collection, tmp_path):
    root, _ = collection
    (tmp_path / "empty").mkdir()
    code, stdout, _ = run_hashing("duplicates", tmp_path / "empty", "--hash", "dhash")
    assert code == 0 and "nothing to compare" in stdout
    for args, words in [((tmp_path / "nowhere", "--hash", "phash"), "not a folder"),
                        ((root,), "hashing train --images FOLDER --recipe copies"),
                        ((root, "--hash", "phash", "--threshold", "65"), "from 0 to 64"),
                        ((root, "--hash", "phash", "--dry-run"), "--move-to"),
                        ((root, "--hash", "phash", "--move-to", "/proc/dups"), "--move-to"),
                        (("--undo", root / "set0" / "000.png"), "not a move log")]:
        code, stdout, stderr = run_hashing("duplicates", *args)
        assert words in one_line_error(code, stderr), (args, stderr)


def test_training_calibrates_the_threshold_and_auto_uses_it(copies_run, collection, tmp_path):
    from hashing.model import checkpoint
    from hashing.train.calibration import calibration_line

    config = checkpoint.read_config(copies_run)
    cal = config["calibration"]
    assert cal["fingerprint"] == config["fingerprint"] and 0 <= cal["threshold"] <= 64
    assert cal["copy_pairs"] > 1000 and set(cal["per_edit"]) >= {"jpeg", "crop", "combo"}
    assert f"duplicate threshold: {cal['threshold']}" in calibration_line(config)
    root, truth = collection
    out = tmp_path / "m.json"
    code, stdout, stderr = run_hashing("duplicates", root, "--model", copies_run, "--quiet", "--json", out,
                                       "--no-verify")
    assert code == 0, stderr
    found = json.loads(out.read_text())
    assert found["threshold"] == cal["threshold"] and "calibrated" in found["threshold_note"]
    assert found["files"] == len(truth) and found["verified"] is False
    # with the pixel check (the default) auto is the wider candidate radius, a quarter of the bits
    code, stdout, stderr = run_hashing("duplicates", root, "--model", copies_run, "--quiet", "--json", out)
    assert code == 0, stderr
    found = json.loads(out.read_text())
    assert found["threshold"] == max(16, cal["threshold"]) and found["verified"] is True
    # a record edited by hand is refused in one line, not used (500 bits of 64) nor taken for none
    for bad in (500, "abc", -1):
        damaged = {**config, "calibration": {**cal, "threshold": bad}}
        with pytest.raises(HashingError, match="calibration record is damaged"):
            calibration_line(damaged)
    # a copy of a retrained model's weights: the record no longer matches, the fallback is said
    config["fingerprint"] = "0" * 16
    assert "not calibrated" in calibration_line(config)


@pytest.mark.system
def test_a_kill_during_moves_loses_nothing_and_undo_restores(collection, tmp_path):
    import shutil

    root, truth = collection
    work = tmp_path / "pics"
    shutil.copytree(root / "set0", work / "set0")
    shutil.copytree(root / "copies", work / "copies")
    before = {p.relative_to(work): p.read_bytes() for p in work.rglob("*") if p.is_file()}
    code, stdout, _ = run_hashing("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet",
                                  "--move-to", tmp_path / "plan", "--dry-run")
    planned = [line for line in stdout.splitlines() if line.startswith("would move ") and " -> " in line]
    assert code == 0 and len(planned) >= 2 and not (tmp_path / "plan").exists()
    for crash_at in (1, 3, 6):
        target = tmp_path / f"moved{crash_at}"
        env = {**os.environ, "HASHING_CRASH_AT": str(crash_at)}
        code, _, _ = run_hashing_process("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet",
                                         "--move-to", target, env=env)
        assert code == -9                                     # killed
        logs = list(target.glob("hashing-moves-*.jsonl"))
        assert len(logs) == 1
        for rel, data in before.items():                      # every file in its old place or in the target
            places = [p for p in (work / rel, target / rel) if p.exists()]
            assert places and all(p.read_bytes() == data for p in places), rel
        code, stdout, stderr = run_hashing("duplicates", "--undo", logs[0])
        assert code == 0, stderr
        after = {p.relative_to(work): p.read_bytes() for p in work.rglob("*") if p.is_file()}
        assert after == before
        assert not [p for p in target.rglob("*") if p.is_file() and p.suffix not in (".jsonl", ".lock")]
    code, stdout, _ = run_hashing("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet",
                                  "--move-to", tmp_path / "all")
    assert code == 0 and f"moved {len(planned)} files" in stdout
    assert len([p for p in work.rglob("*") if p.is_file()]) == len(before) - len(planned)


def test_report_is_one_self_contained_page(collection, tmp_path):
    from hashing.dedup.find import find_duplicates
    from hashing.dedup.html import write_report

    root, _ = collection
    found = find_duplicates([str(root)], hash_name="phash", threshold=4, progress=False)
    page_path = tmp_path / "r.html"
    write_report(found, page_path)
    page = page_path.read_text()
    shown = sum(len(g) for g in found.groups)
    assert page.count('src="data:image/png;base64,') == shown and "<img src=x" not in page
    assert "&lt;img src=x onerror=window.pwned=1&gt;.png" in page
    assert page.count('class="keep"') == len(found.groups)


@pytest.mark.system
def test_report_in_chromium_shows_every_group_with_its_thumbnails(collection, tmp_path):
    """The page in a real browser (headless Chromium, as tests/test_browser.py drives the service page):
    every thumbnail decodes, one kept file per group, and a file named like HTML is shown as text."""
    import shutil

    from conftest import importorskip_or_fail, skip_or_fail

    webdriver = importorskip_or_fail("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from hashing.dedup.find import find_duplicates
    from hashing.dedup.html import write_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        skip_or_fail("no Chromium here: `apt-get install chromium chromium-driver` (as root; .ci/run does it)")
    root, _ = collection
    found = find_duplicates([str(root)], hash_name="phash", threshold=4, progress=False)
    page = tmp_path / "report.html"
    write_report(found, page)
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.as_uri())
        groups = driver.find_elements(By.CSS_SELECTOR, "section.group")
        assert len(groups) == len(found.groups)
        for section, group in zip(groups, found.groups):
            figures = section.find_elements(By.TAG_NAME, "figure")
            assert len(figures) == len(group)
            assert len(section.find_elements(By.CSS_SELECTOR, "figure.keep")) == 1
        widths = driver.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth)")
        assert len(widths) == sum(len(g) for g in found.groups) and all(w > 0 for w in widths)
        assert driver.execute_script("return window.pwned === undefined")
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".path")]
        assert any(text.endswith(EVIL) for text in shown)              # grouped with digit 1, shown as text
    finally:
        driver.quit()


def test_against_an_index_finds_the_files_already_there(copies_run, collection, tmp_path):
    from hashing.workflows.index import build_index

    root, _ = collection
    index = tmp_path / "idx"
    build_index(copies_run, str(index), images=root / "set0", progress=False)
    out = tmp_path / "a.json"
    code, stdout, stderr = run_hashing("duplicates", root / "copies", root / "set0", "--against", index,
                                       "--threshold", "6", "--quiet", "--json", out)
    assert code == 0, stderr
    found = json.loads(out.read_text())
    for g in found["groups"]:
        kept, copies = g["files"][0], g["files"][1:]
        assert kept["keep"] and Path(kept["path"]).parent == root / "set0" and copies
        for f in copies:                       # a file of set0 never matches itself
            assert not f["keep"] and f["distance"] <= 6 and Path(f["path"]) != Path(kept["path"])
    # the copies of set0's digits (k = 0, 3, 6, 9 edited by JPEG, brightness, rescale) are mostly found
    copies_found = {Path(f["path"]).name for g in found["groups"] for f in g["files"][1:]}
    assert len(copies_found & {"copy-000.jpg", "copy-003.jpg", "copy-006.jpg", "copy-009.jpg"}) >= 2


def test_info_on_a_run_folder_says_its_duplicate_threshold(copies_run, digits_run):
    code, out, err = run_hashing("info", copies_run, "--json")
    assert code == 0, err
    d = json.loads(out)
    cal = json.loads((copies_run / "config.json").read_text())["calibration"]
    assert d["duplicate_threshold"] == cal["threshold"] == d["calibration"]["threshold"] and d["recipe"] == "copies"
    code, out, _ = run_hashing("info", copies_run)
    assert code == 0 and f"duplicate threshold: {cal['threshold']}" in out and "margins" in out
    code, out, _ = run_hashing("info", digits_run)               # no calibration: bits/8, and how to get one
    assert code == 0 and "bits/8 = 8" in out and "--recipe copies" in out


def test_links_that_lead_nowhere_are_skipped_and_move_to_must_not_hold_the_folder(collection, tmp_path):
    import shutil

    root, _ = collection
    work = tmp_path / "pics"
    shutil.copytree(root / "set0", work / "set0")
    shutil.copytree(root / "copies", work / "copies")
    os.symlink("loop-b.png", work / "loop-a.png")                 # a link loop and a broken link
    os.symlink("loop-a.png", work / "loop-b.png")
    os.symlink("gone.png", work / "broken.png")
    out = tmp_path / "d.json"
    code, stdout, stderr = run_hashing("duplicates", work, "--hash", "phash", "--quiet", "--json", out)
    assert code == 0, stderr
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(out.read_text())["skipped"]}
    assert {"loop-a.png", "loop-b.png", "broken.png"} <= set(reasons) and "broken link" in reasons["broken.png"]
    for target in (work, tmp_path, work / ".."):
        code, stdout, stderr = run_hashing("duplicates", work, "--hash", "phash", "--move-to", target)
        assert "give a folder outside it" in one_line_error(code, stderr), target
    (work / "old-dups").mkdir()                                   # inside the folder: left out, and said
    code, stdout, stderr = run_hashing("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet",
                                       "--move-to", work / "old-dups", "--dry-run")
    assert code == 0 and f"left out of the scan: {work / 'old-dups'}" in stdout, stderr
    code, stdout, stderr = run_hashing("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet",
                                       "--move-to", tmp_path / "dups")
    assert code == 0 and "moved " in stdout, stderr
    (log,) = (tmp_path / "dups").glob("hashing-moves-*.jsonl")
    def pictures():
        return sorted(p for p in (tmp_path / "dups").rglob("*") if p.is_file() and p.suffix in (".png", ".jpg"))

    moved = pictures()
    code, stdout, stderr = run_hashing("duplicates", "--undo", log, "--dry-run")
    assert code == 0 and f"would move back {len(moved)} files" in stdout, stderr
    assert moved and pictures() == moved                                              # nothing moved back
    code, stdout, stderr = run_hashing("duplicates", "--undo", log)
    assert code == 0 and f"moved back {len(moved)} files" in stdout and not pictures()
    assert not [p for p in (tmp_path / "dups").iterdir() if p.is_dir()]               # its empty folders gone


def test_keep_rules_rank_the_files_of_a_group(tmp_path):
    from PIL import Image

    from hashing.dedup.find import keep_order

    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    picture = Image.fromarray(np.stack([ramp, ramp.T, ramp // 2], -1))
    picture.save(tmp_path / "a.png")
    picture.save(tmp_path / "b.jpg", quality=98)                          # ten times the PNG's bytes, lossy
    assert os.path.getsize(tmp_path / "b.jpg") > os.path.getsize(tmp_path / "a.png")
    picture.resize((32, 32)).save(tmp_path / "small.bmp")
    picture.resize((80, 80)).save(tmp_path / "big.jpg", quality=50)
    paths = [str(tmp_path / n) for n in ("a.png", "b.jpg", "small.bmp", "big.jpg")]
    for k, p in enumerate(paths):
        os.utime(p, ns=(10**18 + k * 10**9, 10**18 + k * 10**9))
    # most pixels first; at as many pixels a lossless file before a JPEG, whatever their bytes
    assert list(keep_order(paths, "largest")) == [1, 2, 3, 0]
    assert list(keep_order(paths, "oldest")) == [0, 1, 2, 3] and list(keep_order(paths, "newest")) == [3, 2, 1, 0]
    assert list(keep_order(paths, "first")) == [0, 1, 2, 3]
    assert list(keep_order(paths, "shortest-path")) == [0, 1, 3, 2]       # a tie: the walk order
    os.unlink(paths[0])                                 # another run moved it away since it was read: last, no error
    for rule in ("largest", "oldest", "newest"):
        assert keep_order(paths, rule)[0] == 3, rule


def pictures_under(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in (".png", ".jpg"))


def test_a_move_to_folder_reached_through_a_link_is_left_out_of_the_scan(collection, tmp_path):
    import shutil

    root, _ = collection
    work = tmp_path / "s1"
    shutil.copytree(root / "set0", work / "set0")
    shutil.copytree(root / "copies", work / "copies")
    os.symlink(work, tmp_path / "s1link")                       # s1link/extra is s1/extra
    extra = tmp_path / "s1link" / "extra"
    scan = ("duplicates", work, "--hash", "phash", "--threshold", "6", "--quiet", "--move-to", extra)
    code, stdout, stderr = run_hashing(*scan)
    assert code == 0 and "moved " in stdout, stderr
    moved = pictures_under(work / "extra")
    assert moved
    out = tmp_path / "d.json"
    code, stdout, stderr = run_hashing(*scan, "--dry-run", "--json", out)
    assert code == 0 and f"left out of the scan: {extra}" in stdout, stderr
    found = json.loads(out.read_text())
    assert found["files"] == len(pictures_under(work)) - len(moved)          # the moved files are not read again
    assert not [f for g in found["groups"] for f in g["files"] if "extra" in f["path"]]
    assert "extra/extra" not in stdout and not (work / "extra" / "extra").exists()
    # two outputs on one file through a link are refused like two outputs on one name
    os.symlink("same.json", tmp_path / "view.html")
    code, _, stderr = run_hashing("duplicates", work, "--hash", "phash", "--json", tmp_path / "same.json",
                                  "--report", tmp_path / "view.html")
    assert "are the same file" in one_line_error(code, stderr)
    os.symlink(work / "set0" / "000.png", tmp_path / "out.json")             # a link to a picture, named like JSON
    code, _, stderr = run_hashing("duplicates", work, "--hash", "phash", "--json", tmp_path / "out.json")
    assert "a link to" in one_line_error(code, stderr) and (work / "set0" / "000.png").read_bytes()[:4] == b"\x89PNG"


def test_against_an_index_of_the_folder_itself_moves_nothing_and_a_group_keeps_a_file(copies_run, collection,
                                                                                    tmp_path):
    import shutil

    from hashing.workflows.index import build_index

    root, _ = collection
    work = tmp_path / "pics"
    shutil.copytree(root / "set0", work / "set0")
    shutil.copy(work / "set0" / "000.png", work / "set0" / "000-again.png")    # a copy inside the indexed folder
    index = tmp_path / "idx"
    build_index(copies_run, str(index), images=work / "set0", progress=False)
    (work / "hard").mkdir()
    for p in (work / "set0").iterdir():
        os.link(p, work / "hard" / p.name)                                     # the indexed files by other names
    before = {p: p.read_bytes() for p in pictures_under(work)}
    out, dups = tmp_path / "a.json", tmp_path / "dups"
    for folder in (work / "set0", work / "hard"):
        code, stdout, stderr = run_hashing("duplicates", folder, "--against", index, "--threshold", "6", "--quiet",
                                           "--json", out, "--move-to", dups)
        assert code == 0, stderr
        found = json.loads(out.read_text())
        assert found["groups"] == [] and found["indexed"] == found["files"] == 21, folder
        assert "21 items of the index themselves (not compared)" in stdout and "never an item of the index" in stdout
        assert "nothing to move" in stdout
        assert {p: p.read_bytes() for p in pictures_under(work)} == before
    # new files that are copies of indexed ones are moved; the indexed files stay
    (work / "new").mkdir()
    for name in ("003.png", "006.png", "009.png"):
        shutil.copy(work / "set0" / name, work / "new" / name)
    code, stdout, stderr = run_hashing("duplicates", work / "new", "--against", index, "--threshold", "6", "--quiet",
                                       "--json", out, "--move-to", dups, "--dry-run")
    found = json.loads(out.read_text())
    assert code == 0 and len(found["groups"]) == 3 and "would move 3 files" in stdout, stderr
    for g in found["groups"]:
        assert [f["keep"] for f in g["files"]] == [True, False] and "/set0/" in g["files"][0]["path"]
    # an indexed file gone from the disk: its copy is the group's kept file, and stays
    shutil.rmtree(work / "hard")
    os.unlink(work / "set0" / "003.png")
    code, stdout, stderr = run_hashing("duplicates", work / "new", "--against", index, "--threshold", "6", "--quiet",
                                       "--json", out, "--move-to", dups)
    assert code == 0 and "moved 2 files" in stdout, stderr
    assert [p.name for p in pictures_under(work / "new")] == ["003.png"]
    group = next(g["files"] for g in json.loads(out.read_text())["groups"] if g["files"][0]["path"].endswith("003.png"))
    assert [f["keep"] for f in group] == [False, True] and group[1]["path"].endswith("new/003.png")


@pytest.mark.system
def test_names_that_are_not_utf8_are_written_by_every_output(collection, tmp_path):
    import shutil

    root, _ = collection
    work = tmp_path / "pics"
    shutil.copytree(root / "set0", work)
    bad = os.fsencode(work) + b"/bad\xffcopy.png"                          # a name Linux holds, not UTF-8
    shutil.copyfile(work / "000.png", bad)
    name = os.fsdecode(bad)
    dups = os.fsdecode(os.fsencode(tmp_path) + b"/dups\xfe")
    out, table, page = tmp_path / "d.json", tmp_path / "d.csv", tmp_path / "d.html"
    strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}           # a terminal that takes UTF-8 only
    code, stdout, stderr = run_hashing_process("duplicates", work, "--hash", "phash", "--threshold", "4", "--quiet",
                                       "--json", out, "--csv", table, "--report", page, "--move-to", dups, env=strict)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert "bad\\udcffcopy.png" in stdout and "dups\\udcfe" in stdout                # escaped, as the JSON writes it
    assert name in [f["path"] for g in json.loads(out.read_text())["groups"] for f in g["files"]]
    assert bad in table.read_bytes()                                         # the CSV: the name's own bytes
    assert "bad\\udcffcopy.png" in page.read_text(encoding="utf-8")         # the page: escaped, valid UTF-8
    assert not os.path.lexists(bad) and os.path.lexists(os.fsencode(dups) + b"/bad\xffcopy.png")
    (log,) = Path(dups).glob("hashing-moves-*.jsonl")
    code, stdout, stderr = run_hashing_process("duplicates", "--undo", log, env=strict)
    assert code == 0 and "moved back 1 files" in stdout and "dups\\udcfe" in stdout, stderr
    assert os.path.lexists(bad)


def test_moves_never_take_a_kept_file_or_the_last_file_of_a_group(tmp_path):
    from hashing.dedup.find import Member, to_move

    for name in "abcdfgh":
        (tmp_path / f"{name}.png").write_bytes(name.encode())
    os.link(tmp_path / "d.png", tmp_path / "e.png")                        # e is d by another name
    p = {name: str(tmp_path / f"{name}.png") for name in "abcdefgh"}
    groups = [[Member(p["a"], 0, True), Member(p["b"], 1, False), Member(p["c"], 2, False)],
              [Member(p["d"], 0, True), Member(p["e"], 0, False)],
              [Member(p["f"], 0, True), Member(p["g"], 1, False)],
              [Member(p["h"], 0, True), Member(p["g"], 1, False)]]
    assert to_move(groups) == [p["b"], p["c"], p["g"]]
    os.unlink(p["a"])                                                       # a kept file gone since it was found
    assert to_move(groups) == [p["c"], p["g"]]                              # b stays: the group keeps a file
