r"""Codes from the learned features by ITQ (HashConfig.codes = "itq").

The trained code layer (MapToCode + BatchNorm + sign) squeezes the conv features into `bits`
signs under the contrastive objective; on clothing that layer keeps less of the features'
neighbourhoods than a rotation fitted to them afterwards does. Fashion-MNIST, 64 bits, one
model (the default recipe's clothing settings, 15 epochs on 20,000 images), all 10,000 test
queries against all 60,000 train images: precision@100 with the trained layer's signs 0.729,
cosine of the 2,304 conv features 0.786, ITQ of those features to 64 bits 0.758 (docs/experiments.md,
"Codes by rotation"; benchmarks/rotation.py).

With codes = "itq" the model trains exactly as before (the layer still carries the objective
and so shapes the features); after every epoch, before the checkpoint is written,
`fit_rotation` fits on the features of up to SAMPLE training images (eval mode, the inputs
the index will see):

    f = features(x) / ||features(x)||                 # (B, D), D = the last conv map, flattened
    V = (f - \mu) P                                   # PCA to `bits` dimensions: P is (D, bits)
    R = argmin_R ||sign(V R) - V R||_F^2, R^T R = I   # ITQ (Gong & Lazebnik, CVPR 2011)

and stores \mu (D,) and W = P R (D, bits) in the encoder as buffers (so in the weights, under
the checkpoint's fingerprint). An index then stores sign((f - \mu) W) > 0. Unit length first:
cosine of the features measured better than their L2 (ITQ fitted to a sample of the database's
features: P@100 0.762 against 0.757).

The fit reads the model and changes nothing it trains on, so only the last one matters for the
finished model; the others exist so that a run folder cut off after any epoch still answers
with a rotation of its own features. They are quick ones (QUICK images, 10 ITQ iterations):
a full fit costs 7 s at 64 bits and 28 s at 512 on a 2-core CPU (Fashion-MNIST), against
25–60 s for the epoch itself.
"""

from __future__ import annotations

from typing import Callable

import torch

from hashing.core.errors import HashingError

SAMPLE = 20_000                 # training images the rotation is fitted on, at most
QUICK = 4_096                   # those of a quick fit (or twice the bits, when more)
MAX_FLOATS = 50_000_000         # and at most this many feature values held at once (200 MB)
BUFFERS = ("encoder.feature_mean", "encoder.projection")    # what a fit writes, by name in the model


def sample_size(n: int, dim: int, cap: int = SAMPLE) -> int:
    """How many of n training images to fit on when each has `dim` features."""
    return min(n, cap, max(1, MAX_FLOATS // dim))


def check(n: int, bits: int, dim: int) -> None:
    """Before training: PCA to `bits` dimensions needs that many images (and features)."""
    if sample_size(n, dim) < bits:
        raise HashingError(f"codes 'itq' fits a {bits}-bit rotation on the training images' features and needs at "
                           f"least {bits} images; this split has {n} (use fewer bits, more images, or codes layer)",
                           settings=("codes",))


@torch.inference_mode()
def fit_rotation(model, inputs: Callable[[torch.Tensor], torch.Tensor], n: int, device: torch.device,
                 batch: int = 1024, seed: int = 0, quick: bool = False) -> None:
    """Fit the encoder's feature mean and projection (ITQ) on an even spread of the n training
    images; `inputs(idx)` gives the model's input for the positions idx, as training gets it.
    `quick`: on fewer images with fewer iterations (the epochs before the last)."""
    from hashing.codes.baselines import ITQ

    encoder = model.encoder
    was_training = model.training
    model.eval()
    dim, bits = encoder.projection.shape
    m = sample_size(n, dim, max(QUICK, 2 * bits) if quick else SAMPLE)
    idx = torch.linspace(0, n - 1, m, device=device).round().long().unique()          # (m,) evenly spread
    f = torch.cat([encoder.features(inputs(idx[i:i + batch])).float().cpu() for i in range(0, len(idx), batch)])
    model.train(was_training)
    itq = ITQ(bits, seed, iterations=10 if quick else 50).fit(f.numpy())
    w = itq.pca.components_.T @ itq.rotation                                          # (D, bits)
    encoder.feature_mean.copy_(torch.from_numpy(itq.pca.mean_).to(encoder.feature_mean))
    encoder.projection.copy_(torch.from_numpy(w).to(encoder.projection))
