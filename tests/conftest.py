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
