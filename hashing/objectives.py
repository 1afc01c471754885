r"""Training objectives: named loss terms and their weights, combined into one loss.

- reconstruction: per-image MSE between the decoder output and the input (the seed).
- balance: each bit on for about half the batch: mean_j (mean_i h_ij - 1/2)^2 * 4.
- decorrelation: bits carry different information: ||C - I||_F^2 / (bits (bits - 1)) with
  C the correlation of the +-1 codes over the batch (diagonal excluded).
- contrastive: no labels. Two random views of each image; their +-1 codes, scaled to unit
  norm, should agree more with each other than with any other image in the batch
  (NT-Xent / InfoNCE, Chen et al. 2020; for hashing, CIBHash, Qiu et al. 2021). The
  cosine of +-1 codes is 1 - 2 d_H / bits, so this directly shapes Hamming distances.
- supervised: labels where the dataset has them (label -1 = unlabelled, skipped): each
  class gets a hash centre from a Hadamard matrix and every code is pulled to its
  class centre by binary cross-entropy on sigmoid(x) (CSQ, Yuan et al. CVPR 2020).
  It sees a random view of each image (augmentation), as the contrastive term does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from hashing.augment import VIEWS, resolve_views

TERMS = ("reconstruction", "balance", "decorrelation", "contrastive", "supervised")


@dataclass
class Objective:
    reconstruction: float = 1.0
    balance: float = 0.0
    decorrelation: float = 0.0
    contrastive: float = 0.0
    supervised: float = 0.0
    temperature: float = 0.3     # NT-Xent temperature on unit-norm codes
    views: str = "auto"          # random views (augment.VIEWS; auto = by dataset) for contrastive/supervised

    def __post_init__(self):
        if self.views != "auto" and self.views not in VIEWS:
            raise ValueError(f"views must be auto or one of {sorted(VIEWS)}, got {self.views!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def needs_labels(self) -> bool:
        return self.supervised > 0

    @property
    def needs_views(self) -> bool:
        return self.contrastive > 0


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


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over 2B views: (B, D), (B, D) unit rows -> (B,) per-image loss."""
    n = a.shape[0]
    z = torch.cat([a, b])                                  # (2B, D)
    sim = z @ z.t() / temperature                          # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))
    target = torch.arange(2 * n, device=a.device).roll(n)      # view i's positive is view i +- n
    loss = F.cross_entropy(sim.float(), target, reduction="none")
    return (loss[:n] + loss[n:]) / 2


def _pm1(code: torch.Tensor, domain: str) -> torch.Tensor:
    return 2 * code.float() - 1 if domain == "01" else code.float()


def compute(model, x: torch.Tensor, labels: torch.Tensor | None, obj: Objective,
            centres: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One batch -> (loss to differentiate, per-image loss (B,), {term: value}).

    With a contrastive term the batch is seen as two random views and the other terms
    use the first view, so a step costs two encoder passes (plus one decoder pass when
    reconstruction is on), not three.
    """
    view = VIEWS[resolve_views(obj.views, model.cfg.dataset)]
    x0 = view(x) if (obj.needs_views or obj.needs_labels) else x    # labels: the view is augmentation
    z, code = model.encode(x0)                                               # (B, bits) each
    per_image = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if obj.reconstruction:
        recon = model.decoder(code)
        mse = ((recon.float() - x0.float()) ** 2).flatten(1).mean(1)
        parts["reconstruction"] = mse.mean()
        per_image = per_image + obj.reconstruction * mse
    pm = _pm1(code, model.cfg.domain)                                         # (B, bits) in {-1, +1}
    h = (pm + 1) / 2
    if obj.contrastive:
        _, code2 = model.encode(view(x))
        scale = code.shape[1] ** -0.5
        con = nt_xent(pm * scale, _pm1(code2, model.cfg.domain) * scale, obj.temperature)
        parts["contrastive"] = con.mean()
        per_image = per_image + obj.contrastive * con
    loss = per_image.mean()
    if obj.balance:
        parts["balance"] = 4 * ((h.mean(0) - 0.5) ** 2).mean()
        loss = loss + obj.balance * parts["balance"]
    if obj.decorrelation:
        c = pm - pm.mean(0)
        cov = c.t() @ c / x.shape[0]
        std = cov.diagonal().clamp_min(1e-4).sqrt()
        corr = cov / std[:, None] / std[None, :]
        nb = corr.shape[0]
        parts["decorrelation"] = (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (nb * (nb - 1))
        loss = loss + obj.decorrelation * parts["decorrelation"]
    if obj.supervised and labels is not None and centres is not None:
        known = labels >= 0
        if known.any():
            target = centres[labels[known]]
            sup = F.binary_cross_entropy_with_logits(z[known].float(), target, reduction="none").mean(1)
            parts["supervised"] = sup.mean()
            loss = loss + obj.supervised * sup.sum() / x.shape[0]
    return loss, per_image, parts
