import numpy as np
import torch

from hashing.train.objectives import nt_xent


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _oracle(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """InfoNCE written out view by view: -log e^{s(v, v+)/t} / sum over every other view of e^{s(v, o)/t}."""
    views = np.concatenate([a, b])
    n = len(a)
    losses = []
    for i, v in enumerate(views):
        positive = views[(i + n) % (2 * n)]
        denominator = sum(np.exp(v @ views[j] / t) for j in range(2 * n) if j != i)
        losses.append(-np.log(np.exp(v @ positive / t) / denominator))
    return (np.array(losses[:n]) + np.array(losses[n:])) / 2


def test_nt_xent_is_the_infonce_formula_view_by_view():
    rng = np.random.default_rng(0)
    a, b = (_unit(rng.normal(size=(4, 6))) for _ in range(2))
    for t in (0.1, 0.5):
        got = nt_xent(torch.tensor(a), torch.tensor(b), t)
        np.testing.assert_allclose(got.numpy(), _oracle(a, b, t), rtol=1e-5)   # the loss is taken in float32


def test_nt_xent_is_lowest_when_each_view_matches_only_its_partner():
    # Hand-built: orthogonal images whose views agree exactly -> each view's loss is
    # -log e^{1/t} / (e^{1/t} + (2n - 2) e^{0}) with n = 3 images.
    a = torch.eye(3, 4, dtype=torch.float64)
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 4))
    np.testing.assert_allclose(nt_xent(a, a.clone(), t).numpy(), [expected] * 3, rtol=1e-6)
    swapped = a[[1, 0, 2]]                           # images 0 and 1 paired with each other's view
    assert (nt_xent(a, swapped, t)[:2] > nt_xent(a, a.clone(), t)[:2]).all()
