"""Which device computes: the names the CLI offers and the one function that resolves them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hashing.core.errors import HashingError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")   # auto = CUDA when a GPU is visible, else CPU


def resolve_device(name: str) -> "torch.device":
    """'auto' | 'cpu' | 'cuda' -> a concrete torch.device; 'cuda' without a GPU is a user error."""
    import torch   # here, not at the top: the CLI lists DEVICES without paying for torch

    if name not in DEVICES:
        raise HashingError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HashingError("device cuda was asked for but no CUDA GPU is available; use device auto or cpu",
                           settings=("device",))
    return torch.device(name)
