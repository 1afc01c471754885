r"""Gradient estimators for the hard threshold, selectable by name.

Every estimator maps real pre-activations x to bits. The forward value is the hard
threshold h(x) = 1[x > 0] (deterministic estimators) or a Bernoulli sample
(stochastic ones); what differs is the backward rule, the surrogate for
\partial h / \partial x, which is 0 almost everywhere for the true threshold.

Each estimator is a pure function of tensors (`identity(x)`, `saturated(x)`, ...), a
thin `nn.Module` (`Estimator`) that carries options and schedules, and a registry
entry: `get(name, **options)` builds one, `names()` lists them.

Output domain: {0, 1} by default; with ``domain="pm1"`` the code is b = 2h - 1 in
{-1, +1}, so each backward rule receives dL/dh = 2 dL/db. x = 0 maps to 0 (resp. -1), never to a
third value: binarization never yields 0 in the +-1 domain.

Schedules: the trainer calls ``module.set_progress(t)`` with t in [0, 1] (fraction of
training done); stochastic estimators anneal their slope or temperature from it.

Score-function estimators need the per-sample loss: the trainer calls
``module.auxiliary_loss(per_sample_loss)`` after the forward pass and adds the result
to the loss it differentiates (zero for every other estimator).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn


def threshold(x: torch.Tensor) -> torch.Tensor:
    """h(x) = 1[x > 0] in x's dtype: x = 0 maps to 0, so no code bit is ever undefined."""
    return (x > 0).to(x.dtype)


class _Surrogate(torch.autograd.Function):
    """Forward: the given hard value; backward: grad_output transformed by `rule`."""

    @staticmethod
    def forward(ctx, x, hard, rule):
        ctx.save_for_backward(x)
        ctx.rule = rule
        return hard

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ctx.rule(x, grad), None, None


def _straight_through(x: torch.Tensor, rule: Callable, hard: torch.Tensor | None = None) -> torch.Tensor:
    return _Surrogate.apply(x, threshold(x) if hard is None else hard, rule)


# ---- deterministic estimators: forward h(x) = 1[x > 0] ---------------------------------

def identity(x: torch.Tensor) -> torch.Tensor:
    r"""Straight-through identity (Hinton 2012 lectures; Bengio, Léonard & Courville 2013).

    forward  h = 1[x > 0];  backward  \partial L/\partial x = \partial L/\partial h.
    Identical to the stop-gradient form x + (h(x) - x).detach().
    """
    return x + (threshold(x) - x).detach()


def clipped_grad(x: torch.Tensor) -> torch.Tensor:
    r"""The popular tutorial's STE: backward = hardtanh(grad_output) = clamp(g, -1, 1).

    forward  h = 1[x > 0];  backward  \partial L/\partial x = clip(\partial L/\partial h, -1, 1).
    This clips gradient *values*; it does not depend on x, so it is gradient clipping,
    not saturation (compare `saturated`).
    """
    return _straight_through(x, lambda x, g: g.clamp(-1.0, 1.0))


def saturated(x: torch.Tensor) -> torch.Tensor:
    r"""Saturated STE, the hard-tanh proxy (Hubara, Courbariaux et al. 2016).

    forward  h = 1[x > 0];  backward  \partial L/\partial x = g \cdot 1[|x| \le 1].
    Yin et al. (ICLR 2019) show this clipped-ReLU-type proxy correlates with the true
    population gradient while the identity STE may not.
    """
    return _straight_through(x, lambda x, g: g * (x.abs() <= 1).to(g.dtype))


def proxy_sigmoid(x: torch.Tensor) -> torch.Tensor:
    r"""ST with sigmoid derivative (Bengio, Léonard & Courville 2013).

    forward  h = 1[x > 0];  backward  g \cdot \sigma(x)(1 - \sigma(x)).
    """
    def rule(x, g):
        s = torch.sigmoid(x)
        return g * s * (1 - s)
    return _straight_through(x, rule)


def proxy_tanh(x: torch.Tensor) -> torch.Tensor:
    r"""Proxy derivative of tanh: forward h = 1[x > 0]; backward g \cdot (1 - \tanh^2 x)."""
    return _straight_through(x, lambda x, g: g * (1 - torch.tanh(x) ** 2))


def proxy_relu(x: torch.Tensor) -> torch.Tensor:
    r"""Proxy derivative of ReLU (Yin et al. 2019): backward g \cdot 1[x > 0].

    This is exactly what the original design's ReLU-before-binarizer does: a bit that is 0 for an
    image gets no gradient, so descent can switch it off but never back on.
    """
    return _straight_through(x, lambda x, g: g * (x > 0).to(g.dtype))


def proxy_clipped_relu(x: torch.Tensor) -> torch.Tensor:
    r"""Proxy derivative of the clipped ReLU min(max(x, 0), 1) (Yin et al. 2019).

    forward h = 1[x > 0]; backward g \cdot 1[0 \le x \le 1].
    """
    return _straight_through(x, lambda x, g: g * ((x >= 0) & (x <= 1)).to(g.dtype))


# ---- stochastic estimators --------------------------------------------------------------

def sample(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """h ~ Bernoulli(p) elementwise, in p's dtype, without a gradient: 1[u < p], u ~ U(0, 1)."""
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return (u < p.detach()).to(p.dtype)


def hard_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """(hardtanh(z) + 1) / 2 = clip((z + 1) / 2, 0, 1)."""
    return (torch.nn.functional.hardtanh(z) + 1) / 2


def bernoulli(x: torch.Tensor, slope: float = 1.0, prob: str = "sigmoid", scale_by_dp: bool = False,
              generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Binary stochastic neuron with a straight-through gradient (Bengio et al. 2013;
    slope annealing from Chung, Ahn & Bengio 2016).

    p = \sigma(s x) or hard-sigmoid(s x) = (hardtanh(s x) + 1)/2;  forward h ~ Bernoulli(p);
    backward g (plain ST) or g \cdot \partial p/\partial x when scale_by_dp.
    """
    p = torch.sigmoid(slope * x) if prob == "sigmoid" else hard_sigmoid(slope * x)
    h = sample(p, generator)
    if scale_by_dp:
        return p + (h - p).detach()
    return x + (h - x).detach()


def gumbel(x: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Straight-through binary Concrete / Gumbel-sigmoid (Jang et al. 2016; Maddison et al. 2016).

    With logistic noise l = \log u - \log(1 - u), u ~ U(0, 1):
    y = \sigma((x + l)/\tau);  forward h = 1[y > 1/2] = 1[x + l > 0];  backward through y:
    \partial L/\partial x = g \cdot y(1 - y)/\tau. As \tau \to 0 the sample is h ~ Bernoulli(\sigma(x)).
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp(1e-6, 1 - 1e-6)
    y = torch.sigmoid((x + torch.log(u) - torch.log1p(-u)) / tau)
    return y + (threshold(y - 0.5) - y).detach()


def reinmax(x: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""ReinMax, second-order straight-through (Liu et al., NeurIPS 2023), two-class case.

    With logits (x, 0), \pi_0 = \sigma(x) and D ~ Bernoulli(\pi_0) the forward value,
    \pi_1 = (D + \sigma(x/\tau))/2, and the algorithm's re-parameterised \pi_1 has value \pi_1 and
    derivative \pi_1(1 - \pi_1); its output D + \pi_2 - sg(\pi_2) with \pi_2 = 2\pi_1 - \pi_0/2 gives
    backward  \partial L/\partial x = g \cdot (2\pi_1(1 - \pi_1) - \sigma(x)(1 - \sigma(x))/2).
    """
    p0 = torch.sigmoid(x)
    d = sample(p0, generator)
    p1 = ((d + torch.sigmoid(x / tau)) / 2).detach()
    deriv = 2 * p1 * (1 - p1) - p0.detach() * (1 - p0.detach()) / 2
    return _Surrogate.apply(x, d, lambda x, g: g * deriv)


# ---- modules and registry ---------------------------------------------------------------

class Estimator(nn.Module):
    """Maps pre-activations (B, bits) to codes. Subclasses set `name`, `summary` and
    `forward_bits` (the training-time rule); evaluation is always the hard threshold unless
    a stochastic estimator is asked to sample at evaluation too."""

    name = "estimator"
    summary = ""
    stochastic = False

    def __init__(self, domain: str = "01"):
        super().__init__()
        if domain not in ("01", "pm1"):
            raise ValueError(f"domain must be '01' or 'pm1', got {domain!r}")
        self.domain = domain

    def forward_bits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def sampling(self) -> bool:
        """Whether forward uses the estimator's rule (training) or the plain threshold."""
        return self.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_bits(x) if self.sampling else threshold(x)
        return 2 * h - 1 if self.domain == "pm1" else h

    def set_progress(self, t: float) -> None:
        """Annealing hook: t in [0, 1] is the fraction of training done."""

    def auxiliary_loss(self, per_sample_loss: torch.Tensor) -> torch.Tensor | None:
        """Extra loss term the trainer adds (score-function estimators); None for most."""
        return None

    def extra_repr(self) -> str:
        return f"domain={self.domain}"


# name -> (pure function, one-line summary). Each rule's maths and paper are in its docstring above.
RULES: dict[str, tuple[Callable, str]] = {
    "identity": (identity, "straight-through: gradient passes unchanged"),
    "clipped-grad": (clipped_grad, "gradient values clipped to [-1, 1] (hardtanh of grad; clipping, not saturation)"),
    "saturated": (saturated, "gradient kept only where |x| <= 1 (hard-tanh proxy)"),
    "proxy-sigmoid": (proxy_sigmoid, "gradient times sigmoid'(x) (Bengio et al. 2013)"),
    "proxy-tanh": (proxy_tanh, "gradient times tanh'(x)"),
    "proxy-relu": (proxy_relu, "gradient times 1[x > 0] (what the original design's ReLU does)"),
    "proxy-clipped-relu": (proxy_clipped_relu, "gradient times 1[0 <= x <= 1] (clipped ReLU, Yin et al. 2019)"),
}


class Deterministic(Estimator):
    """Forward h = 1[x > 0]; backward by the pure function that RULES names `rule`."""

    def __init__(self, rule: str, domain: str = "01"):
        super().__init__(domain)
        self.name = rule
        self.fn, self.summary = RULES[rule]

    def forward_bits(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"rule={self.name}, domain={self.domain}"


class _Stochastic(Estimator):
    stochastic = True

    def __init__(self, domain: str = "01", stochastic_eval: bool = False, seed: int | None = None):
        super().__init__(domain)
        self.stochastic_eval = stochastic_eval
        self.seed = seed
        self._generator: torch.Generator | None = None

    @property
    def sampling(self) -> bool:
        # An index never stores random codes: evaluation thresholds unless asked to sample.
        return self.training or self.stochastic_eval

    def generator(self, x: torch.Tensor) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return self._generator


class Bernoulli(_Stochastic):
    name = "bernoulli"
    summary = "stochastic neuron h ~ Bernoulli(sigmoid(s x)), straight-through, slope annealed"

    def __init__(self, domain="01", slope: float = 1.0, max_slope: float = 5.0, prob: str = "sigmoid",
                 scale_by_dp: bool = False, stochastic_eval: bool = False, seed: int | None = None):
        super().__init__(domain, stochastic_eval, seed)
        if prob not in ("sigmoid", "hard-sigmoid"):
            raise ValueError("prob must be 'sigmoid' or 'hard-sigmoid'")
        self.start_slope, self.max_slope, self.slope = slope, max(max_slope, slope), slope
        self.prob, self.scale_by_dp = prob, scale_by_dp

    def set_progress(self, t):
        self.slope = self.start_slope + (self.max_slope - self.start_slope) * min(max(t, 0.0), 1.0)

    def forward_bits(self, x):
        return bernoulli(x, self.slope, self.prob, self.scale_by_dp, self.generator(x))


class Gumbel(_Stochastic):
    name = "gumbel"
    summary = "straight-through Gumbel-sigmoid, temperature annealed"

    def __init__(self, domain="01", tau: float = 1.0, min_tau: float = 0.1, stochastic_eval: bool = False,
                 seed: int | None = None):
        super().__init__(domain, stochastic_eval, seed)
        self.start_tau, self.min_tau, self.tau = tau, min(min_tau, tau), tau

    def set_progress(self, t):
        # Exponential decay from tau to min_tau (Jang et al. anneal tau = max(min, tau0 e^{-rt})).
        self.tau = self.start_tau * (self.min_tau / self.start_tau) ** min(max(t, 0.0), 1.0)

    def forward_bits(self, x):
        return gumbel(x, self.tau, self.generator(x))


class ReinMax(_Stochastic):
    name = "reinmax"
    summary = "ReinMax second-order straight-through (Liu et al. 2023)"

    def __init__(self, domain="01", tau: float = 1.0, stochastic_eval: bool = False, seed: int | None = None):
        super().__init__(domain, stochastic_eval, seed)
        self.tau = tau

    def forward_bits(self, x):
        return reinmax(x, self.tau, self.generator(x))


class Reinforce(_Stochastic):
    r"""REINFORCE / score function with a moving-average baseline (Williams 1992; Bengio et al. 2013).

    forward h ~ Bernoulli(\sigma(x)), no gradient through h; the trainer hands over the
    per-image loss L_i (objectives.compute's per-image terms) and adds the surrogate
    mean_i (L_i - b) \sum_j \log p(h_ij | x_ij), whose gradient is (L_i - b)(h_ij - \sigma(x_ij)):
    an unbiased estimate of \partial E[L]/\partial x. The baseline b is an exponential moving
    average of the batch-mean loss (decay 0.9).
    """

    name = "reinforce"
    summary = "score-function estimator with moving-average baseline (unbiased)"

    def __init__(self, domain="01", decay: float = 0.9, stochastic_eval: bool = False, seed: int | None = None):
        super().__init__(domain, stochastic_eval, seed)
        self.decay = decay
        self.register_buffer("baseline", torch.zeros(()), persistent=False)
        self.register_buffer("has_baseline", torch.zeros((), dtype=torch.bool), persistent=False)
        self._logp: torch.Tensor | None = None

    def forward_bits(self, x):
        h = sample(torch.sigmoid(x), self.generator(x))
        # log p(h | x) summed over the non-batch dimensions: (B,)
        logp = h * torch.nn.functional.logsigmoid(x) + (1 - h) * torch.nn.functional.logsigmoid(-x)
        self._logp = logp.flatten(1).sum(1)
        return h

    def auxiliary_loss(self, per_sample_loss):
        if self._logp is None or not self.training:
            return None
        loss = per_sample_loss.detach()
        b = self.baseline if bool(self.has_baseline) else loss.mean()
        surrogate = ((loss - b) * self._logp).mean()
        with torch.no_grad():
            self.baseline.copy_(self.decay * b + (1 - self.decay) * loss.mean())
            self.has_baseline.fill_(True)
        self._logp = None
        return surrogate


# name -> what builds it from its options (domain, slope, tau, ...).
REGISTRY: dict[str, Callable[..., Estimator]] = {
    **{rule: functools.partial(Deterministic, rule) for rule in RULES},
    **{cls.name: cls for cls in (Bernoulli, Reinforce, Gumbel, ReinMax)},
}


def names() -> list[str]:
    return list(REGISTRY)


def summary_of(name: str) -> str:
    return RULES[name][1] if name in RULES else REGISTRY[name].summary


def get(name: str, **options) -> Estimator:
    """Build the estimator registered as `name` with its options (domain, slope, tau, ...)."""
    from hashing.core.errors import HashingError

    if name not in REGISTRY:
        raise HashingError(f"unknown estimator {name!r}: choose one of {', '.join(REGISTRY)}")
    try:
        return REGISTRY[name](**options)
    except (TypeError, ValueError) as e:   # an option it does not take, or a bad value
        raise HashingError(f"estimator {name!r}: bad estimator_options {options} ({e})") from None


def curves(name: str, x: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward value and backward gradient of estimator `name` at each x, for plots.

    Stochastic estimators are shown by their expectation over 2,000 samples.
    """
    est = get(name, **options).train()
    reps = 2000 if est.stochastic else 1
    xs = x.detach().repeat(reps, 1).requires_grad_(True)  # (reps, n)
    y = est(xs)
    aux = est.auxiliary_loss(y.sum(1))
    total = y.sum() if aux is None else aux * reps
    grad, = torch.autograd.grad(total, xs, allow_unused=True)
    grad = torch.zeros_like(xs) if grad is None else grad
    return y.detach().mean(0), grad.mean(0)


