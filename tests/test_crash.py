"""SIGKILL `hashing index` (FAISS, Milvus Lite; rebuild and append) and `hashing train` right after
every file-system change of their commit, and at a delay: the artefact is always wholly the old
version or wholly the new one (benchmarks/crash.py does the work)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from crash import SCENARIOS, run_all  # noqa: E402


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    pytest.importorskip("milvus_lite")
    return {r.scenario: r for r in run_all(tmp_path_factory.mktemp("crash"), delays=[4.0])}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_at_any_point_leaves_the_old_or_the_new_version(outcomes, scenario):
    r = outcomes[scenario]
    assert r.points >= 3, f"{scenario}: too few crash points seen ({r.points})"
    assert r.kills >= r.points                      # every point really killed the process
    assert r.bad == [], "\n".join(r.bad)
    assert r.old > 0 and r.new > 0                  # kills early and late: both outcomes are exercised
    assert r.old + r.new == r.points + 1
