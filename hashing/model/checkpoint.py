"""A run directory that rebuilds its model with nothing else.

RUN_DIR/config.json                 the manifest: {"format", "model": HashConfig, "train": TrainConfig,
                                    "fingerprint", "files": {"weights": ..., "history": ...}}
RUN_DIR/model-<FP>.safetensors      weights (safetensors: no pickle, loads under weights_only torch)
RUN_DIR/history-<FP>.json           loss per epoch and per step
RUN_DIR/reconstructions.png         a picture drawn after training (neighbours.png when no decoder trained)

Every save writes the new version's files under new names (FP = the first 16 hex digits of
the weights' SHA-256) and then replaces config.json atomically: that rename is the commit.
A crash at any moment leaves either the previous config.json, whose files are still there,
or the new one; files no manifest names are removed after the commit. The fingerprint is
checked on every load, so weights that do not belong to the config are refused, never used.
Run folders from before versioned names (model.safetensors, no "files") still load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hashing.core.atomic import commit_manifest, discard_uncommitted, file_name, write_bytes, write_json
from hashing.core import validation as V
from hashing.core.errors import HashingError
from hashing.indexes.base import ModelRecord
from hashing.model.device import resolve_device
from hashing.model.network import HashAutoencoder, upgrade_state_dict
from hashing.model.config import HashConfig

FORMAT = "hashing-checkpoint/1"
CONFIG = "config.json"
LEGACY_FILES = {"weights": "model.safetensors", "history": "history.json"}
OURS = ("model*.safetensors", "history*.json")      # every name a save has ever written


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


def fingerprint(weights: bytes) -> str:
    """First 16 hex digits of the weights' SHA-256: names the model an index was built with."""
    return hashlib.sha256(weights).hexdigest()[:16]


def save(run_dir: str | Path, model: HashAutoencoder, train: dict | None = None,
         history: dict | None = None) -> str:
    """Write a new version of the run folder and commit it; return the weights' fingerprint."""
    from safetensors.torch import save as serialize

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise HashingError(f"training diverged: {bad[0]} has non-finite values; nothing was saved (lower lr)",
                           settings=("lr",))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = serialize(state)
    fp = fingerprint(data)
    files = {"weights": f"model-{fp}.safetensors", "history": f"history-{fp}.json"}
    try:
        write_bytes(run_dir / files["weights"], data)
        write_json(run_dir / files["history"], history or {})
        commit_manifest(run_dir, CONFIG, {"format": FORMAT, "model": model.cfg.to_dict(), "train": train or {},
                                          "fingerprint": fp, "files": files}, OURS)
    except BaseException:
        discard_uncommitted(run_dir, CONFIG, files)
        raise
    return fp


def annotate(run_dir: str | Path, key: str, value: dict) -> None:
    """Add one record (the duplicate threshold's calibration) to the committed config.json, atomically."""
    config = read_config(run_dir)
    config[key] = value
    write_json(Path(run_dir) / CONFIG, config)


def read_config(run_dir: str | Path) -> dict:
    """config.json's contents, checked to be a hashing checkpoint's."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise HashingError(f"model not found: {run_dir} is not a folder; train one with `hashing train --out {run_dir}`")
    try:
        config = V.json_loads(path.read_text())
    except FileNotFoundError:
        raise HashingError(f"{run_dir} is not a checkpoint (no {CONFIG}); train one with `hashing train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HashingError(f"{path} is corrupt (not JSON); retrain the model") from None
    except IsADirectoryError:
        raise HashingError(f"{path} is a folder, not a config file; retrain the model") from None
    except OSError as e:
        raise HashingError(f"{path} cannot be read ({e.strerror})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise HashingError(f"{run_dir} is not a hashing checkpoint ({CONFIG} has no format {FORMAT!r})")
    return config


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from RUN_DIR in eval mode, after checking its weights against config.json."""
    try:
        return _load(Path(run_dir), device)
    except FileNotFoundError:   # a writer committed a new version between our reads: read it again
        pass
    try:
        return _load(Path(run_dir), device)
    except FileNotFoundError as e:
        raise HashingError(f"{run_dir}: {Path(e.filename or '?').name}, named in {CONFIG}, is missing; "
                           f"retrain the model") from None


def _load(run_dir: Path, device) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load as deserialize

    config = read_config(run_dir)
    where = run_dir / CONFIG
    try:
        cfg = HashConfig.from_dict(config.get("model"))
    except (HashingError, TypeError) as e:
        raise HashingError(f"{where}: invalid model config ({e})") from None
    recorded = config.get("fingerprint")
    if not isinstance(recorded, str):
        raise HashingError(f"{where}: no weights fingerprint; retrain the model")
    files = config.get("files", LEGACY_FILES)
    if not isinstance(files, dict):
        raise HashingError(f"{where}: \"files\" must be an object naming the weights")
    weights = run_dir / file_name(files.get("weights"), f"{where}: files.weights")
    try:
        data = weights.read_bytes()
    except (IsADirectoryError, PermissionError) as e:
        raise HashingError(f"{weights} cannot be read as weights ({e.strerror})") from None
    if fingerprint(data) != recorded:
        raise HashingError(f"{weights} does not match the fingerprint in {CONFIG}: corrupt, or another model's "
                           f"weights; retrain the model")
    model = HashAutoencoder(cfg)
    try:
        state = deserialize(data)
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise HashingError(f"{weights}: {bad} holds NaN or infinite values; these weights cannot make codes "
                               f"(retrain the model)")
        model.load_state_dict(upgrade_state_dict(state, model))
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0][:120]
        raise HashingError(f"{weights} does not match its config or is corrupt ({first})") from None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return Checkpoint(model.to(device).eval(), cfg, train, recorded, run_dir)


def load_model_for(index, device: str = "auto"):
    """The model that built the index, checked to be that very model (bits and weights), on `device`."""
    run_dir = index.info.model.run_dir
    if not run_dir:
        raise HashingError("the index does not record the model that built it; rebuild it with `hashing index`")
    ckpt = load(run_dir, resolve_device(device))
    index.info.check_model(ckpt.record())
    return ckpt.model
