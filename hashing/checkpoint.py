"""A run directory that rebuilds its model with nothing else.

RUN_DIR/model.safetensors  weights (safetensors: no pickle, loads under weights_only torch)
RUN_DIR/config.json        {"format", "model": HashConfig, "train": TrainConfig, "fingerprint"}
RUN_DIR/history.json       loss per epoch and per step

config.json is written last, atomically: a run dir without it is not a checkpoint, so
an interrupted save never leaves something that loads half-way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from hashing.atomic import atomic_path, write_json
from hashing.errors import HashingError
from hashing.model import HashAutoencoder, HashConfig, upgrade_state_dict

FORMAT = "hashing-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def fingerprint(path: Path) -> str:
    """First 16 hex digits of the weights' SHA-256: names the model an index was built with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def save(run_dir: str | Path, model: HashAutoencoder, train: dict | None = None,
         history: dict | None = None) -> str:
    """Write weights, history and config (last) atomically; return the weights' fingerprint."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    if history is not None:
        write_json(run_dir / "history.json", history)
    fp = fingerprint(run_dir / WEIGHTS)
    write_json(run_dir / CONFIG, {"format": FORMAT, "model": model.cfg.to_dict(), "train": train or {},
                                  "fingerprint": fp})
    return fp


def read_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise HashingError(f"model not found: {run_dir} is not a folder; train one with `hashing train --out {run_dir}`")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise HashingError(f"{run_dir} is not a checkpoint (no {CONFIG}); train one with `hashing train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HashingError(f"{path} is corrupt (not JSON); retrain the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HashingError(f"{run_dir} is not a hashing checkpoint ({CONFIG} has no format {FORMAT!r})")
    return meta


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[HashAutoencoder, dict]:
    """Rebuild the model from RUN_DIR in eval mode; return (model, config.json contents)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta = read_config(run_dir)
    try:
        cfg = HashConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise HashingError(f"{run_dir / CONFIG} has an invalid model config ({e})") from None
    model = HashAutoencoder(cfg)
    try:
        state = load_file(str(run_dir / WEIGHTS))
        model.load_state_dict(upgrade_state_dict(state, model))
    except FileNotFoundError:
        raise HashingError(f"{run_dir} has no {WEIGHTS}; retrain the model") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0][:120]
        raise HashingError(f"{run_dir / WEIGHTS} does not match its config or is corrupt ({first})") from None
    return model.to(device).eval(), meta
