"""A run directory that rebuilds its model with nothing else.

RUN_DIR/model.safetensors  weights (safetensors: no pickle, loads under weights_only torch)
RUN_DIR/config.json        {"format", "model": HashConfig, "train": TrainConfig, "fingerprint"}
RUN_DIR/history.json       loss per epoch and per step

config.json is written last, atomically: a run dir without it is not a checkpoint, so
an interrupted save never leaves something that loads half-way. Its fingerprint (the
weights' SHA-256) is checked on every load, so weights that do not belong to the config
are refused, never used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hashing.atomic import atomic_path, write_json
from hashing.errors import HashingError
from hashing.indexes.base import ModelRecord
from hashing.model import HashAutoencoder, HashConfig, upgrade_state_dict

FORMAT = "hashing-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class Checkpoint:
    """A loaded run folder: the model in eval mode and what config.json records beside it."""

    model: HashAutoencoder
    config: HashConfig
    train: dict                # the TrainConfig it was trained under, as recorded
    fingerprint: str
    run_dir: Path

    def record(self) -> ModelRecord:
        """How an index remembers the model that made its codes."""
        return ModelRecord(run_dir=str(self.run_dir.resolve()), fingerprint=self.fingerprint, bits=self.config.bits,
                           estimator=self.config.estimator, dataset=self.config.dataset)


def fingerprint(path: Path) -> str:
    """First 16 hex digits of the weights' SHA-256: names the model an index was built with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def save(run_dir: str | Path, model: HashAutoencoder, train: dict | None = None,
         history: dict | None = None) -> str:
    """Write weights, history and config (last) atomically; return the weights' fingerprint."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise HashingError(f"training diverged: {bad[0]} has non-finite values; nothing was saved (lower --lr)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    if history is not None:
        write_json(run_dir / "history.json", history)
    fp = fingerprint(run_dir / WEIGHTS)
    write_json(run_dir / CONFIG, {"format": FORMAT, "model": model.cfg.to_dict(), "train": train or {},
                                  "fingerprint": fp})
    return fp


def read_config(run_dir: str | Path) -> dict:
    """config.json's contents, checked to be a hashing checkpoint's."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise HashingError(f"model not found: {run_dir} is not a folder; train one with `hashing train --out {run_dir}`")
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise HashingError(f"{run_dir} is not a checkpoint (no {CONFIG}); train one with `hashing train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HashingError(f"{path} is corrupt (not JSON); retrain the model") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise HashingError(f"{run_dir} is not a hashing checkpoint ({CONFIG} has no format {FORMAT!r})")
    return config


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from RUN_DIR in eval mode, after checking its weights against config.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:
        cfg = HashConfig.from_dict(config.get("model"))
    except (HashingError, TypeError) as e:
        raise HashingError(f"{run_dir / CONFIG}: invalid model config ({e})") from None
    recorded = config.get("fingerprint")
    if not isinstance(recorded, str):
        raise HashingError(f"{run_dir / CONFIG}: no weights fingerprint; retrain the model")
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise HashingError(f"{run_dir} has no {WEIGHTS}; retrain the model")
    if fingerprint(weights) != recorded:
        raise HashingError(f"{weights} does not match the fingerprint in {CONFIG}: corrupt, or another model's "
                           f"weights; retrain the model")
    model = HashAutoencoder(cfg)
    try:
        model.load_state_dict(upgrade_state_dict(load_file(str(weights)), model))
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0][:120]
        raise HashingError(f"{weights} does not match its config or is corrupt ({first})") from None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return Checkpoint(model.to(device).eval(), cfg, train, recorded, run_dir)
