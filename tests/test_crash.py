"""SIGKILL `hashing index` (FAISS, Milvus Lite; rebuild and append), `hashing remove` and `hashing train`
right after every file-system change of their commit, and at a delay: the artefact is always wholly the
old version or wholly the new one (benchmarks/crash.py does the work)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CRASH = Path(__file__).resolve().parents[1] / "benchmarks" / "crash.py"
sys.path.insert(0, str(CRASH.parent))

from crash import SCENARIOS, train_model  # noqa: E402


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """One benchmark process per scenario, side by side (they touch disjoint files; a kill is mostly
    a start-up wait, so on 2 cores they take about half the time of one after another), all on
    the same two models, trained once here."""
    pytest.importorskip("milvus_lite")
    work = tmp_path_factory.mktemp("crash")
    for name, seed in (("model_a", 0), ("model_b", 1)):
        train_model(work / name, seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = {}
    for scenario in SCENARIOS:
        for name in ("model_a", "model_b"):
            shutil.copytree(work / name, work / scenario / name)
        with open(work / scenario / "log.txt", "w") as log:             # a file: no pipe to fill and block
            jobs[scenario] = subprocess.Popen([sys.executable, str(CRASH), "--out", str(work / scenario),
                                               "--delays", "4", "--only", scenario],
                                              stdout=log, stderr=subprocess.STDOUT, env=env)
    results = {}
    for scenario, job in jobs.items():
        job.wait(timeout=900)
        log = (work / scenario / "log.txt").read_text()
        assert job.returncode == 0, f"crash.py --only {scenario} failed:\n{log[-3000:]}"
        [results[scenario]] = json.loads((work / scenario / "crash.json").read_text())
    return results


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_at_any_point_leaves_the_old_or_the_new_version(outcomes, scenario):
    r = outcomes[scenario]
    assert r["points"] >= 3, f"{scenario}: too few crash points seen ({r['points']})"
    assert r["kills"] >= r["points"]                # every point really killed the process
    assert r["bad"] == [], "\n".join(r["bad"])
    assert r["old"] > 0 and r["new"] > 0            # kills early and late: both outcomes are exercised
    assert r["old"] + r["new"] == r["points"] + 1
