"""Options that several commands share, defined once, and choices read from the library.

Registries that live in torch-free modules (datasets, splits, devices, recipes, backends,
baselines) are plain click.Choice. Those that live beside torch code (estimators, view
families, lr schedules) are `LibraryChoice`: the module is imported only when a value is
checked or a subcommand's help is shown, so `hashing --help` never imports torch.
"""

from __future__ import annotations

import importlib
import json
from typing import Callable

import click

from hashing.core import validation as V
from hashing.images.datasets import DATASETS, SPLITS
from hashing.model.device import DEVICES


class LibraryChoice(click.Choice):
    """click.Choice whose choices come from `module:attribute` (any iterable of names), on first use."""

    def __init__(self, where: str, extra: tuple[str, ...] = ()):
        self._where, self._extra, self._loaded = where, extra, None
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            module, attr = self._where.split(":")
            self._loaded = (*self._extra, *getattr(importlib.import_module(module), attr))
        return self._loaded

    @choices.setter
    def choices(self, value) -> None:   # click.Choice.__init__ assigns it; ours is read lazily
        pass


class FloatOrAuto(click.ParamType):
    """A number, or the word auto (the library decides, e.g. by code length)."""

    name, kind, noun = "float|auto", float, "a number"

    def convert(self, value, param, ctx):
        if isinstance(value, self.kind) or value == "auto":
            return value
        try:
            return self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither {self.noun} nor auto", param, ctx)


class IntOrAuto(FloatOrAuto):
    """A whole number, or the word auto."""

    name, kind, noun = "integer|auto", int, "a whole number"


class JsonObject(click.ParamType):
    """A JSON object on the command line, e.g. '{"brightness": [0.6, 1.8]}'."""

    name = "json"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            parsed = V.json_loads(value)
        except json.JSONDecodeError as e:
            self.fail(f"{value!r} is not JSON ({e.msg})", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{value!r} is not a JSON object {{...}}", param, ctx)
        return parsed


def compose(*decorators: Callable) -> Callable:
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def model_option(f):
    return click.option("--model", "run_dir", required=True, type=click.Path(),
                        help="Run folder written by `hashing train`.")(f)


def device_option(f):
    return click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES),
                        help="auto = CUDA when a GPU is visible, else CPU.")(f)


def wait_option(f):
    return click.option("--wait", type=click.FloatRange(0, 86400), default=0, show_default=True, metavar="SECONDS",
                        help="If another process is writing the index, wait up to this long for it to finish "
                             "instead of failing at once.")(f)


def quiet_option(f):
    return click.option("--quiet", is_flag=True, help="No progress bars.")(f)


def source_options(split: str | None = None, strict: bool = False) -> Callable:
    """Where images come from: --dataset (with --data-dir) or --images; --split with the
    command's default when it reads one split; --strict for commands that stream a folder."""
    opts = [
        click.option("--dataset", type=click.Choice(DATASETS), default=None,
                     help="Built-in dataset: mnist and fashion-mnist in torchvision's IDX layout (offline: "
                          "--data-dir), digits bundled with scikit-learn. Give this or --images."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder with the torchvision layout DIR/MNIST/raw/*-ubyte (FashionMNIST/raw for "
                          "fashion-mnist); nothing is downloaded when it is given."),
        click.option("--images", type=click.Path(file_okay=False), default=None,
                     help="A folder of image files (PNG, JPEG, WebP, BMP, GIF, TIFF; any size and mode) instead "
                          "of --dataset. FOLDER/CLASS/file: CLASS is the label; files directly in FOLDER are "
                          "unlabelled; FOLDER/train and FOLDER/test, when both exist, are the splits. Unreadable "
                          "files are skipped and counted."),
    ]
    if split is not None:
        opts.append(click.option("--split", type=click.Choice(SPLITS), default=None,
                                 help=f"Split to read (a folder has splits only with train/ and test/ "
                                      f"folders).  [default: {split}]"))
    if strict:
        opts.append(click.option("--strict", is_flag=True,
                                 help="With --images: stop at the first unreadable file instead of skipping it."))
    return compose(*opts)


class SettingOption(click.Option):
    """A training setting whose default the recipe decides; --help shows it from the library."""

    def get_help_record(self, ctx):
        from hashing.train.recipes import default_text

        base = getattr(self, "_base_help", None)
        if base is None:
            base = self._base_help = self.help or ""
        self.help = f"{base}  [default: {default_text(self.name)}]"
        return super().get_help_record(ctx)


def setting(*decls: str, **kwargs) -> Callable:
    """A `hashing train` option that overrides the recipe only when given (None otherwise)."""
    return click.option(*decls, cls=SettingOption, default=None, **kwargs)
