r"""Training objectives: named loss terms and their weights, combined into one loss.

Every term is a pure function of tensors, and each is one of two kinds:

- per-image terms return one value per image, shape (B,): reconstruction, contrastive,
  supervised. Their weighted sum is the per-image loss L_i; score-function estimators
  (REINFORCE) need exactly this, since their gradient weights each image's log-probability
  by that image's own loss.
- per-batch terms are statistics of the whole batch and return a scalar: balance,
  decorrelation. No single image owns them, so they are added to the mean of L_i and never
  reach a score-function estimator.

loss = mean_i L_i + sum over batch terms of weight * term.

- reconstruction: MSE between the decoder output and the input (the original design).
- contrastive: no labels. Two random views of each image; their +-1 codes, scaled to unit
  norm, should agree more with each other than with any other image in the batch
  (NT-Xent / InfoNCE, Chen et al. 2020; for hashing, CIBHash, Qiu et al. 2021). The
  cosine of +-1 codes is 1 - 2 d_H / bits, so this directly shapes Hamming distances.
  With `asymmetric` the first "view" is the image itself and only the second is random:
  the pair an index of originals meets when it is asked for an edited copy (the `copies`
  recipe; measured in docs/experiments.md, "The copies recipe").
- supervised: labels where the dataset has them (label -1 = unlabelled: 0 for that image):
  each class gets a hash centre from a Hadamard matrix and every code is pulled to its
  class centre by binary cross-entropy on sigmoid(z) (CSQ, Yuan et al. CVPR 2020). It sees
  a random view of each image (augmentation), as the contrastive term does.
- balance: each bit on for about half the batch: mean_j (mean_i h_ij - 1/2)^2 * 4.
- decorrelation: bits carry different information: ||C - I||_F^2 / (bits (bits - 1)) with
  C the correlation of the +-1 codes over the batch (diagonal excluded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from hashing.core import validation as V
from hashing.train.views import VIEWS, check_view_options
from hashing.core.errors import HashingError

if TYPE_CHECKING:
    from hashing.train.distributed import Group

PER_IMAGE = ("reconstruction", "contrastive", "supervised")
PER_BATCH = ("balance", "decorrelation")


@dataclass
class Objective:
    reconstruction: float = 1.0
    balance: float = 0.0
    decorrelation: float = 0.0
    contrastive: float = 0.0
    supervised: float = 0.0
    temperature: float = 0.3     # NT-Xent temperature on unit-norm codes
    views: str = "auto"          # random views (augment.VIEWS) for contrastive/supervised; recipes.resolve fixes "auto"
    view_options: dict = field(default_factory=dict)   # keyword arguments of that view family ({} = its defaults)
    asymmetric: bool = False     # the first view is the image itself, the second a random view
    neighbours: int = 0          # > 0: the second view is of the image or one of its k nearest (hashing.train.neighbours)

    def __post_init__(self):
        for term in PER_IMAGE + PER_BATCH:
            setattr(self, term, V.number(f"{term} weight", getattr(self, term), lo=0))
        if not any(getattr(self, term) for term in PER_IMAGE + PER_BATCH):
            raise HashingError("every loss weight is 0: give at least one term a positive weight")
        self.temperature = V.number("temperature", self.temperature, positive=True)
        V.choice("views", self.views, ("auto", *VIEWS))
        V.mapping("view_options", self.view_options)
        if self.views != "auto":
            check_view_options(self.views, self.view_options)   # an option the family does not take fails here
        if not isinstance(self.asymmetric, bool):
            raise HashingError(f"asymmetric must be true or false, got {self.asymmetric!r}")
        self.neighbours = V.integer("neighbours", self.neighbours, 0, 1000)
        if self.neighbours and not self.contrastive:
            raise HashingError("neighbours chooses the positives of the two-view term: give contrastive a weight",
                               settings=("neighbours", "contrastive"))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def needs_labels(self) -> bool:
        return self.supervised > 0

    @property
    def needs_views(self) -> bool:
        return self.contrastive > 0 or self.supervised > 0


def hadamard_centres(n_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """(n_classes, bits) 0/1 centres, pairwise Hamming distance bits/2 where bits allows."""
    from scipy.linalg import hadamard

    size = 1
    while size < bits:
        size *= 2
    if size == bits and n_classes <= 2 * bits:
        h = torch.from_numpy(hadamard(bits)).float()
        rows = torch.cat([h, -h])[:n_classes]
    else:
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, 2, (n_classes, bits), generator=g).float() * 2 - 1
    return (rows > 0).float()


# ---- per-image terms: (B,) ------------------------------------------------------------------

def reconstruction_term(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), (B, C, H, W) -> (B,) mean squared error per image."""
    return ((recon.float() - x.float()) ** 2).flatten(1).mean(1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, group: "Group | None" = None) -> torch.Tensor:
    """InfoNCE: (B, D), (B, D) unit rows -> (B,) per-image loss.

    Each view's positive is the other view of its image; its negatives are all the other
    views of the batch. With a `group` of several training processes the batch is every
    rank's (hashing.train.distributed.Group.gather, one collective for both views): this rank's 2B
    views are scored against all 2 * world * B, which with one process is exactly the plain loss.
    """
    from hashing.train.distributed import Group

    group = group or Group()
    n = a.shape[0]
    mine = torch.cat([a, b])                                                # (2B, D)
    everyone = group.gather(mine)                                           # (W * 2B, D): rank blocks [a_r; b_r]
    world = everyone.shape[0] // (2 * n)
    keys = everyone.view(world, 2, n, -1).transpose(0, 1).reshape(2 * world * n, -1)   # (2WB, D): all a, then all b
    sim = mine @ keys.t() / temperature                                     # (2B, 2WB)
    own = torch.arange(group.rank * n, (group.rank + 1) * n, device=a.device)   # this rank's images, globally
    rows = torch.arange(2 * n, device=a.device)
    total = world * n
    sim[rows, torch.cat([own, own + total])] = float("-inf")               # a view is not its own negative
    target = torch.cat([own + total, own])                                 # view i's positive: its other view
    loss = F.cross_entropy(sim.float(), target, reduction="none")
    return (loss[:n] + loss[n:]) / 2


def centre_term(z: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, bits) pre-activations, (B,) labels (-1 unknown), (classes, bits) 0/1 -> (B,), 0 where unknown."""
    known = labels >= 0
    target = centres[labels.clamp_min(0)]                                            # (B, bits)
    bce = F.binary_cross_entropy_with_logits(z.float(), target, reduction="none").mean(1)
    return torch.where(known, bce, torch.zeros_like(bce))


# ---- per-batch terms: () ----------------------------------------------------------------------

def balance_term(h: torch.Tensor) -> torch.Tensor:
    """(B, bits) in {0, 1} -> (): 0 when every bit is on for half the batch, 1 when constant."""
    return 4 * ((h.mean(0) - 0.5) ** 2).mean()


def decorrelation_term(pm: torch.Tensor) -> torch.Tensor:
    """(B, bits) in {-1, +1} -> (): mean squared off-diagonal correlation between bits."""
    c = pm - pm.mean(0)
    cov = c.t() @ c / pm.shape[0]                                                    # (bits, bits)
    std = cov.diagonal().clamp_min(1e-4).sqrt()
    corr = cov / std[:, None] / std[None, :]
    nb = corr.shape[0]
    return (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (nb * (nb - 1))


def _pm1(code: torch.Tensor, domain: str) -> torch.Tensor:
    return 2 * code.float() - 1 if domain == "01" else code.float()


def compute(model, x: torch.Tensor, labels: torch.Tensor | None, obj: Objective,
            centres: torch.Tensor | None = None, group: "Group | None" = None,
            partner: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One batch -> (loss to differentiate, per-image loss (B,), {term: batch mean}).

    `partner` (B, C, H, W), when given, is what the contrastive term's second view is made of
    instead of x: each image's nearest-neighbour positive (hashing.train.neighbours).

    Under data-parallel training `group` makes the contrastive negatives every rank's; the
    batch terms (balance, decorrelation) stay statistics of this rank's batch.

    With views the first view stands in for the image in every term, so a contrastive step
    costs two encoder passes (plus one decoder pass when reconstruction is on), not three.
    """
    if obj.needs_views and obj.views not in VIEWS:
        raise ValueError(f"views {obj.views!r} is not a view family: build the configs with recipes.resolve")
    if obj.needs_views:
        family = VIEWS[obj.views]

        def view(images: torch.Tensor) -> torch.Tensor:
            return family(images, model.mean, model.std, **obj.view_options)
    x0 = view(x) if obj.needs_views and not obj.asymmetric else x
    z, code = model.encode(x0)                                               # (B, bits) each
    pm = _pm1(code, model.cfg.domain)                                         # (B, bits) in {-1, +1}
    per_image = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}

    def add(term: str, values: torch.Tensor, weight: float) -> None:       # values (B,)
        nonlocal per_image
        per_image = per_image + weight * values
        parts[term] = values.mean()

    if obj.reconstruction:
        add("reconstruction", reconstruction_term(model.decoder(code), x0), obj.reconstruction)
    if obj.contrastive:
        _, code2 = model.encode(view(x if partner is None else partner))
        scale = code.shape[1] ** -0.5
        add("contrastive", nt_xent(pm * scale, _pm1(code2, model.cfg.domain) * scale, obj.temperature, group),
            obj.contrastive)
    if obj.supervised and labels is not None and centres is not None and bool((labels >= 0).any()):
        sup = centre_term(z, labels, centres)
        per_image = per_image + obj.supervised * sup
        parts["supervised"] = sup[labels >= 0].mean()
    loss = per_image.mean()
    if obj.balance:
        parts["balance"] = balance_term((pm + 1) / 2)
        loss = loss + obj.balance * parts["balance"]
    if obj.decorrelation:
        parts["decorrelation"] = decorrelation_term(pm)
        loss = loss + obj.decorrelation * parts["decorrelation"]
    return loss, per_image, parts
