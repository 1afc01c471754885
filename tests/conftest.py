import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small model trained briefly on scikit-learn's digits, shared by the tests that need one."""
    from hashing.train import train_on_dataset

    out = tmp_path_factory.mktemp("runs") / "digits64"
    train_on_dataset("default", "digits", out, progress=False, bits=64, epochs=3, seed=0)   # what `hashing train` runs
    return out


@pytest.fixture(scope="session")
def digits_index(digits_run, tmp_path_factory):
    from hashing.retrieval import build_index

    out = tmp_path_factory.mktemp("idx") / "digits"
    build_index(digits_run, str(out), dataset="digits", split="train", progress=False)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def run_hashing(*args, **kwargs):
    """The real console script (as a user runs it): (exit code, stdout, stderr)."""
    import shutil
    import subprocess
    import sys

    cmd = [shutil.which("hashing")] if shutil.which("hashing") else [sys.executable, "-m", "hashing"]
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, **kwargs)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def hashing_cli():
    return run_hashing


def one_line_error(code: int, err: str) -> str:
    """Assert the user saw one `Error:` line (click's usage errors add a usage hint) and a non-zero exit."""
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("Error") and sum(x.startswith("Error") for x in lines) == 1, err
    assert len(lines) == 1 or lines[0].startswith("Usage"), err
    return lines[-1]
