"""Each estimator's forward value and input gradient against an independent NumPy oracle."""

import numpy as np
import pytest
import torch

from hashing.model import estimators as E

X = np.array([-50.0, -3.0, -1.0001, -1.0, -0.9999, -0.5, 0.0, 0.3, 0.9999, 1.0, 1.0001, 2.0, 40.0])
G = np.array([2.5, -3.0, 1.5, -2.0, 0.5, 4.0, -1.7, 3.3, -0.2, 2.2, -5.0, 1.1, -2.6])  # |g| > 1 mostly


def sig(x):
    return 1 / (1 + np.exp(-x))


ORACLES = {
    "identity": lambda x, g: g,
    "clipped-grad": lambda x, g: np.clip(g, -1, 1),
    "saturated": lambda x, g: g * (np.abs(x) <= 1),
    "proxy-sigmoid": lambda x, g: g * sig(x) * (1 - sig(x)),
    "proxy-tanh": lambda x, g: g * (1 - np.tanh(x) ** 2),
    "proxy-relu": lambda x, g: g * (x > 0),
    "proxy-clipped-relu": lambda x, g: g * ((x >= 0) & (x <= 1)),
}


def run(name, x, g, **opts):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    est = E.get(name, **opts).train()
    y = est(xt[None])[0]
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", list(ORACLES))
def test_deterministic_forward_and_gradient_match_oracle(name):
    y, grad = run(name, X, G)
    np.testing.assert_array_equal(y, (X > 0).astype(float))
    np.testing.assert_allclose(grad, ORACLES[name](X, G), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(ORACLES))
def test_pm1_domain_never_zero_and_rule_sees_twice_the_gradient(name):
    # b = 2h - 1, so the rule receives dL/dh = 2 dL/db.
    y, grad = run(name, X, G, domain="pm1")
    np.testing.assert_array_equal(y, np.where(X > 0, 1.0, -1.0))
    assert not np.any(y == 0)
    np.testing.assert_allclose(grad, ORACLES[name](X, 2 * G), rtol=1e-12, atol=1e-12)


def test_identity_and_clipped_grad_differ_for_large_upstream_gradients():
    _, a = run("identity", X, G)
    _, b = run("clipped-grad", X, G)
    assert np.any(a != b)


def test_pure_functions_match_modules():
    x = torch.tensor(X)
    for name, fn in [("identity", E.identity), ("saturated", E.saturated), ("proxy-tanh", E.proxy_tanh)]:
        assert torch.equal(fn(x), E.get(name)(x[None])[0])


@pytest.mark.parametrize("name", ["bernoulli", "gumbel", "reinmax", "reinforce"])
def test_stochastic_sample_mean_matches_probability(name):
    # 200,000 draws per x: the standard error of a Bernoulli mean is <= 0.5/sqrt(2e5) = 0.0011,
    # so 0.006 is more than 5 standard errors.
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 2.5], dtype=torch.float64)
    est = E.get(name, seed=1).train()
    samples = est(x.repeat(200_000, 1))
    assert set(torch.unique(samples).tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(samples.mean(0).numpy(), sig(x.numpy()), atol=0.006)


def test_bernoulli_hard_sigmoid_and_slope():
    x = torch.tensor([-0.5, 0.0, 0.25, 1.0], dtype=torch.float64)
    est = E.get("bernoulli", prob="hard-sigmoid", slope=2.0, seed=0).train()
    mean = est(x.repeat(200_000, 1)).mean(0).numpy()
    np.testing.assert_allclose(mean, np.clip((2 * x.numpy() + 1) / 2, 0, 1), atol=0.006)
    est.set_progress(1.0)
    assert est.slope == 5.0


@pytest.mark.parametrize("name", ["bernoulli", "gumbel", "reinmax", "reinforce"])
def test_eval_mode_is_deterministic_threshold(name):
    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    est = E.get(name).eval()
    a, b = est(x), est(x)
    assert torch.equal(a, b) and torch.equal(a, (x > 0).float())


def test_gumbel_at_low_temperature_is_hard_threshold_of_noisy_logit():
    # As tau -> 0 the relaxed sample is the hard one; forward is already hard, backward vanishes off 0.
    x = torch.tensor([-3.0, -0.2, 0.4, 3.0], dtype=torch.float64, requires_grad=True)
    est = E.get("gumbel", tau=1e-3, seed=3).train()
    y = est(x.repeat(20_000, 1))
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(y.mean(0).detach().numpy(), sig(x.detach().numpy()), atol=0.015)
    g = torch.Generator().manual_seed(5)
    u = torch.rand(x.shape, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    soft = E.gumbel(x, tau=1e-4, generator=torch.Generator().manual_seed(5))
    hard = (x + torch.log(u) - torch.log1p(-u) > 0).double()
    assert torch.equal(soft.detach(), hard)


def test_reinmax_gradient_matches_its_rule():
    x = torch.tensor([-1.5, 0.0, 0.8], dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(7)
    y = E.reinmax(x, tau=2.0, generator=g)
    y.backward(torch.ones_like(x))
    d = y.detach().numpy()
    p1 = (d + sig(x.detach().numpy() / 2.0)) / 2
    s = sig(x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), 2 * p1 * (1 - p1) - s * (1 - s) / 2, rtol=1e-12)


def _loss_table(w):
    # A tiny problem: one unit with logit x, loss L(h) = (h - 0.8)^2 * w + h * 0.3.
    return lambda h: (h - 0.8) ** 2 * w + h * 0.3


def test_reinforce_is_unbiased_and_straight_through_is_not():
    x0 = 0.4
    loss = _loss_table(2.0)
    p = sig(x0)
    exact = (loss(1.0) - loss(0.0)) * p * (1 - p)      # d/dx [p L(1) + (1-p) L(0)]
    n = 400_000
    x = torch.full((n, 1), x0, dtype=torch.float64, requires_grad=True)
    est = E.get("reinforce", seed=11).train()
    h = est(x)
    per = loss(h)[:, 0]
    est.auxiliary_loss(per).backward()               # baseline: the batch mean at the first call
    grads = x.grad[:, 0].numpy() * n                 # undo the mean over the batch
    se = grads.std() / np.sqrt(n)
    assert abs(grads.mean() - exact) < 4 * se + 1e-4
    # straight-through through a Bernoulli sample: E[dL/dh] = E[2w(h-0.8) + 0.3] != exact
    x2 = torch.full((n, 1), x0, dtype=torch.float64, requires_grad=True)
    b = E.get("bernoulli", seed=11).train()
    loss(b(x2)).sum().backward()
    st = x2.grad.mean().item()
    assert abs(st - exact) > 0.1


@pytest.mark.parametrize("name", E.names())
def test_each_estimator_trains_digits_without_nan(name):
    from hashing.images.datasets import load_dataset
    from hashing.model.network import HashAutoencoder
    from hashing.model.config import HashConfig
    from hashing.train.objectives import Objective, compute

    torch.manual_seed(0)
    ds = load_dataset("digits", "train")
    opts = {"seed": 0} if E.get(name).stochastic else {}
    model = HashAutoencoder(HashConfig(bits=32, estimator=name, estimator_options=opts, width=16)).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3, betas=(0.5, 0.999))
    x = model.preprocess(torch.from_numpy(ds.images[:64]))
    first = None
    for step in range(4):
        loss, per, _ = compute(model, x, None, Objective())
        aux = model.binarizer.auxiliary_loss(per)
        total = loss + aux if aux is not None else loss
        opt.zero_grad()
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        first = loss.item() if first is None else first
    assert np.isfinite(loss.item())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_unknown_estimator_is_a_user_error():
    from hashing.core.errors import HashingError

    with pytest.raises(HashingError, match="unknown estimator"):
        E.get("nope")
