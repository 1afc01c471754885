"""In CI (CI=true) the tests that need a real browser or a real Milvus server fail where they would skip,
so a green CI run means the page and the server were tested; elsewhere they skip, saying why. Each case
runs pytest in a child process (with nothing of this session's own fixtures)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def pytest_child(*args, ci: bool, cwd=None, env=None) -> tuple[int, str]:
    """(exit code, output) of `pytest -rs ARGS` in a child, with CI=true or without CI at all."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *map(str, args)],
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    return p.returncode, p.stdout + p.stderr


def outcome(code: int, out: str) -> str:
    """"skipped" (exit 0, a skip said why), "failed" (a failure or an error, exit 1) or what else it was."""
    if code == 0 and " skipped" in out and "passed" not in out:
        return "skipped"
    if code == 1 and ("failed" in out or "error" in out):
        return "failed"
    return f"exit {code}"


def test_no_chromium_fails_the_browser_test_in_ci_and_skips_it_elsewhere(tmp_path):
    """A PATH with only Python on it: no Chromium, as on a machine where apt-get could not install it."""
    env = {"PATH": str(Path(sys.executable).parent)}
    code, out = pytest_child(TESTS / "test_browser.py", ci=False, env=env)
    assert outcome(code, out) == "skipped" and "no Chromium here" in out, out
    code, out = pytest_child(TESTS / "test_browser.py", ci=True, env=env)
    assert outcome(code, out) == "failed" and "no Chromium here" in out and "CI=true" in out, out


PROBE = '''
def test_probe(milvus_server):
    pass
'''

FAKE_SERVER = '''
import sys
sys.path.insert(0, {benchmarks!r})
import milvus_server


def start(self, timeout=180.0):
    raise RuntimeError("milvus-server did not answer within 180 s: (its log)")


def executable():
    return None


if {how!r} == "no-answer":
    milvus_server.MilvusServer.start = start
else:
    milvus_server.MilvusServer.executable = staticmethod(executable)
'''


@pytest.mark.parametrize("how, words", [("no-answer", "milvus-server did not answer within 180 s"),
                                        ("not-installed", "no milvus-server")])
def test_a_milvus_server_that_cannot_start_fails_in_ci_and_skips_elsewhere(tmp_path, how, words):
    """The session fixture `milvus_server` (tests/conftest.py), loaded as a plugin beside a milvus-server
    that never answers or is not installed (the plugin fake_server replaces it: nothing is started)."""
    from conftest import importorskip_or_fail

    importorskip_or_fail("pymilvus")          # the fixture asks for it before it looks for a server
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER.format(benchmarks=str(TESTS.parent / "benchmarks"), how=how))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = ["-p", "fake_server", "-p", "conftest", "--rootdir", tmp_path, tmp_path / "test_probe.py"]
    code, out = pytest_child(*args, ci=False, cwd=tmp_path, env=env)
    assert outcome(code, out) == "skipped" and words in out, out
    code, out = pytest_child(*args, ci=True, cwd=tmp_path, env=env)
    assert outcome(code, out) == "failed" and words in out and "CI=true" in out, out


PACKAGE_PROBE = '''
from conftest import importorskip_or_fail


def test_probe():
    importorskip_or_fail("no_such_package_here")
'''


def test_a_missing_optional_package_fails_in_ci_and_skips_elsewhere(tmp_path):
    """importorskip_or_fail, which the browser test and the Milvus server fixture use for fastapi, selenium and
    pymilvus: pytest.importorskip's skip, but a failure in CI."""
    (tmp_path / "test_probe.py").write_text(PACKAGE_PROBE)
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = ["--rootdir", tmp_path, tmp_path / "test_probe.py"]
    code, out = pytest_child(*args, ci=False, cwd=tmp_path, env=env)
    assert outcome(code, out) == "skipped" and "no_such_package_here" in out, out
    code, out = pytest_child(*args, ci=True, cwd=tmp_path, env=env)
    assert outcome(code, out) == "failed" and "no_such_package_here" in out and "CI=true" in out, out
