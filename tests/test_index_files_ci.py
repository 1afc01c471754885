"""In CI (CI=true) the tests that need a real browser or a real Milvus server fail where they would skip,
so a green CI run means the page and the server were tested; elsewhere they skip, saying why. Each case
runs pytest again, in this process (pytester: a session of its own, with none of this session's fixtures,
and this session's sys.modules, sys.path and environment put back afterwards; a new pytest process
spends 7 to 10 s starting, most of it importing torch for conftest)."""

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def pytest_child(pytester, monkeypatch):
    """(exit code, output) of `pytest -rs ARGS` in a session of its own, with CI=true or without CI at all.
    env: variables set for it; path: folders put first on sys.path (PYTHONPATH for a new process);
    fresh: modules it imports anew (this session's copy is hidden from it and comes back afterwards)."""
    import importlib

    # What the sessions import, imported here first: a module (C extensions among them) that a session
    # imported for the first time would be dropped after it (pytester puts sys.modules back) and loaded
    # again by the next one.
    for name in ("fastapi", "selenium.webdriver", "pymilvus"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    def run(*args, ci: bool, env: dict | None = None, path=(), fresh=()) -> tuple[int, str]:
        with monkeypatch.context() as m:
            m.delenv("CI", raising=False)
            # no third-party plugins (hypothesis, anyio, pytest-benchmark): imported anew and assertion-
            # rewritten in every session here (no .pyc is written), they would take most of its time
            m.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
            if ci:
                m.setenv("CI", "true")
            for k, v in (env or {}).items():
                m.setenv(k, v)
            # conftest's image_cache sets HASHING_CACHE for its session: put this session's back
            if "HASHING_CACHE" in os.environ:
                m.setenv("HASHING_CACHE", os.environ["HASHING_CACHE"])
            for folder in path:
                m.syspath_prepend(str(folder))
            for name in fresh:
                if name in sys.modules:
                    m.delitem(sys.modules, name)
            result = pytester.runpytest_inprocess("-q", "-rs", "-p", "no:cacheprovider", *map(str, args))
        return result.ret, "\n".join(result.outlines + result.errlines)
    return run


def outcome(code: int, out: str) -> str:
    """"skipped" (exit 0, a skip said why), "failed" (a failure or an error, exit 1) or what else it was."""
    if code == 0 and " skipped" in out and "passed" not in out:
        return "skipped"
    if code == 1 and ("failed" in out or "error" in out):
        return "failed"
    return f"exit {code}"


def test_no_chromium_fails_the_browser_test_in_ci_and_skips_it_elsewhere(pytest_child):
    """A PATH with only Python on it: no Chromium, as on a machine where apt-get could not install it
    (test_browser looks for it when it is imported: imported anew)."""
    env = {"PATH": str(Path(sys.executable).parent)}
    code, out = pytest_child(TESTS / "test_browser.py", ci=False, env=env, fresh=["test_browser"])
    assert outcome(code, out) == "skipped" and "no Chromium here" in out, out
    code, out = pytest_child(TESTS / "test_browser.py", ci=True, env=env, fresh=["test_browser"])
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
def test_a_milvus_server_that_cannot_start_fails_in_ci_and_skips_elsewhere(tmp_path, how, words, pytest_child):
    """The session fixture `milvus_server` (tests/conftest.py), loaded as a plugin beside a milvus-server
    that never answers or is not installed (the plugin fake_server replaces it in a copy of
    benchmarks/milvus_server.py of its own: nothing is started, and this session's is untouched)."""
    from conftest import importorskip_or_fail

    importorskip_or_fail("pymilvus")          # the fixture asks for it before it looks for a server
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER.format(benchmarks=str(TESTS.parent / "benchmarks"), how=how))
    args = ["-p", "fake_server", "-p", "conftest", "--rootdir", tmp_path, tmp_path / "test_probe.py"]
    fresh = ["fake_server", "milvus_server"]
    code, out = pytest_child(*args, ci=False, path=[tmp_path, TESTS], fresh=fresh)
    assert outcome(code, out) == "skipped" and words in out, out
    code, out = pytest_child(*args, ci=True, path=[tmp_path, TESTS], fresh=fresh)
    assert outcome(code, out) == "failed" and words in out and "CI=true" in out, out


PACKAGE_PROBE = '''
from conftest import importorskip_or_fail


def test_probe():
    importorskip_or_fail("no_such_package_here")
'''


def test_a_missing_optional_package_fails_in_ci_and_skips_elsewhere(tmp_path, pytest_child):
    """importorskip_or_fail, which the browser test and the Milvus server fixture use for fastapi, selenium and
    pymilvus: pytest.importorskip's skip, but a failure in CI."""
    (tmp_path / "test_probe.py").write_text(PACKAGE_PROBE)
    args = ["--rootdir", tmp_path, tmp_path / "test_probe.py"]
    code, out = pytest_child(*args, ci=False, path=[TESTS], fresh=["test_probe"])
    assert outcome(code, out) == "skipped" and "no_such_package_here" in out, out
    code, out = pytest_child(*args, ci=True, path=[TESTS], fresh=["test_probe"])
    assert outcome(code, out) == "failed" and "no_such_package_here" in out and "CI=true" in out, out
