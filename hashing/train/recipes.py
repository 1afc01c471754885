"""Named training recipes, and the one function that turns a recipe and explicit settings
into the final configs that `train()` runs and the checkpoint records.

A recipe is a typed bundle of overrides, by field name, of the three configs: HashConfig
(model.py: architecture, estimator), Objective (objectives.py: loss terms and views) and
TrainConfig (schedule.py: schedule, batch, device), plus optionally its own automatic batch
(`Recipe.batch`, which replaces the device's), and its settings for particular datasets
(`Recipe.datasets`). `resolve` applies, in this order of precedence, the dataclass defaults <
the recipe < the recipe's settings for the dataset < the caller's explicit settings (the
flags a user gave), then decides everything that depends on the data or the machine, so the
configs it returns contain no "auto": device, batch size, lr scaling, view family, and by
code length the contrastive temperature and where the codes come from (HashConfig.codes). The
checkpoint records the result, so a run folder says what was chosen for its dataset.
The CLI, the benchmarks and the tests all build their configs through it.

Torch is imported inside `resolve` only, so the CLI can list RECIPES without it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from hashing.core import validation as V
from hashing.core.errors import HashingError

if TYPE_CHECKING:
    from hashing.model.config import HashConfig
    from hashing.train.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    summary: str                                                 # one line, shown by `hashing train --help`
    model: Mapping[str, Any] = field(default_factory=dict)       # HashConfig fields
    objective: Mapping[str, Any] = field(default_factory=dict)   # Objective fields
    train: Mapping[str, Any] = field(default_factory=dict)       # TrainConfig fields
    # This recipe's automatic batch on every device, instead of the device's (schedule.AUTO_BATCH);
    # halved for small splits and lr-scaled like it. A --batch-size the user gives still wins.
    batch: int | None = None
    # How this recipe reads an image folder where the user did not say (ImageSpec fields: "channels"
    # instead of the folder's own colour or not, hashing.images.folders.inspect; "trim"); recorded like the rest.
    folder: Mapping[str, Any] = field(default_factory=dict)
    # Settings (any config's field names, as `resolve` takes them, or "batch" for the line
    # above) that replace the recipe's own on one built-in dataset, where measurement chose
    # differently; a user's flags still win.
    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings(self, dataset: str) -> tuple[dict, dict, dict, int | None]:
        """(model, objective, train overrides, automatic batch) of this recipe on `dataset`."""
        from hashing.model.config import HashConfig
        from hashing.train.objectives import Objective

        model, objective, train = dict(self.model), dict(self.objective), dict(self.train)
        own = dict(self.datasets.get(dataset, {}))
        batch = own.pop("batch", self.batch)
        for key, value in own.items():
            group = model if key in _names(HashConfig) else objective if key in _names(Objective) else train
            group[key] = {**group.get(key, {}), **value} if key == "view_options" else value
        return model, objective, train, batch


# Contrastive with nearest-neighbour positives, no decoder: the default, and `kinds` at another temperature.
_NEIGHBOURS = {"contrastive": 1.0, "reconstruction": 0.0, "neighbours": 20}

# The default's temperature by code length. Up to 64 bits a code names a kind, not an image (MNIST,
# 18,097 digits, 64 bits: even at 0.3 three images in four share a code with another), so 0.5 lets
# neighbourhoods share codes (mAP 16 bits 0.907 -> 0.945, 64 bits 0.939 -> 0.964); longer codes keep
# 0.3, where an indexed image still comes back first for itself (at 0.5 the 512-bit codes of the
# 18,097 digits fall to 3,175 distinct ones). docs/experiments.md, "Neighbour positives and temperature".
SHORT_CODE_BITS = 64


def auto_temperature(bits: int) -> float:
    return 0.5 if bits <= SHORT_CODE_BITS else 0.3


# Codes by ITQ of the features (HashConfig.codes, hashing.model.rotation) from 64 bits up, where on
# clothing they measured purer tops: Fashion-MNIST, one model of the 20,000-image screen, P@100 /
# P@1 0.729 / 0.746 with the trained layer's 64 signs, 0.758 / 0.792 by ITQ, for mAP 0.608 -> 0.577
# (benchmarks/rotation.py); at 32 bits ITQ 0.731 against the layer's 0.724 (full data) for less mAP,
# at 16 bits 0.685 against 0.709. On digits the layer stays ahead (MNIST 64 bits mAP 0.964 against
# ITQ's 0.914): "auto" is a dataset's setting, not the default's everywhere.
ROTATION_MIN_BITS = 64


def auto_codes(bits: int) -> str:
    return "itq" if bits >= ROTATION_MIN_BITS else "layer"


# Colour image folders (`hashing train --images` with 3 channels; Recipe.datasets key COLOUR_FOLDER):
# photographs and clip art come in every colour, and two views of one picture share its colours, so
# contrastive codes learned colour instead of content (digits drawn in random colours: mAP 0.104,
# ITQ 0.106). Views whose colours are thrown about (hue anywhere on the wheel, half of them grey,
# channels shuffled or colours inverted half of the time) with each image standardised before the
# encoder (so brightness and contrast say nothing either) took it to 0.392 at 3 epochs, and 0.730 at
# 30 (benchmarks/colour.py; docs/images.md, "Colour pictures"). Neither alone helped (0.103, 0.103).
# Small folders get more passes: about FOLDER_SAMPLES images seen (30 epochs of 4,000), 5 to 60 epochs.
COLOUR_FOLDER = "colour folders"          # a key of Recipe.datasets, as --help shows it
FOLDER_SAMPLES = 120_000
_COLOUR_FOLDER = {"standardise": True, "views": "photo", "epochs": "auto",
                  "view_options": {"hue": 0.5, "p_gray": 0.5, "p_shuffle": 0.5, "p_invert": 0.5}}


# The copies recipe on image folders (`hashing train --images F --recipe copies`, what `hashing
# duplicates` wants): the edits people make to real pictures beyond the protocol's, as views
# (hashing.train.views.random_copy): a solid border, greyscale, a caption band, gamma; and about
# FOLDER_SAMPLES images seen instead of 64 epochs (a few thousand files train in minutes). Where
# the user does not say, it reads a folder in grey (a greyscale copy is then the same picture),
# with plain margins trimmed (a frame, or the empty page around clip art, is cut before the
# resize: hashing.images.reader.trimmed) and stretched to the square (a crop that changes the aspect keeps all it
# shows): Recipe.folder. How each of these was measured: docs/experiments.md, "The copies recipe".
_COPIES_FOLDER = {"epochs": "auto", "view_options": {"p_border": 0.2, "p_grey": 0.2, "p_caption": 0.2,
                                                     "gamma": [0.6, 1.6]}}


def auto_epochs(n_images: int) -> int:
    """Passes over a folder of `n_images` for about FOLDER_SAMPLES images seen, 5 to 60."""
    return int(min(60, max(5, round(FOLDER_SAMPLES / max(n_images, 1)))))


def settings_key(dataset: str, channels: int | None) -> str:
    """Which of a recipe's per-dataset settings apply: a colour folder's own, or the dataset's."""
    return COLOUR_FOLDER if dataset == "images" and channels == 3 else dataset


RECIPES: dict[str, Recipe] = {
    # What `hashing train` uses: the best unsupervised codes per CPU second measured so far
    # (docs/training.md, "Recipes"; the quality sweep of benchmarks/quality.py). No decoder: the
    # reconstruction term cost short codes most (16 bits, MNIST: mAP 0.885 with it, 0.907 without).
    # On clothing (Fashion-MNIST, 64 bits, trained on 20,000 images for 15 epochs, all 60,000 /
    # 10,000 scored; docs/experiments.md, "Fashion-MNIST"): batches of 512 (lr x sqrt(8)), cosine lr and
    # temperature 0.3 took mAP / P@100 from 0.575 / 0.673 (the default as for digits) to 0.599 /
    # 0.710, crops of 60-100 % of the area instead of 35-100 % (a cut-off sleeve tells a shirt
    # from a T-shirt) to 0.592 / 0.732, and a 1-pixel blur before the encoder to 0.608 / 0.729;
    # temperature 0.5 there gave 0.608 / 0.706. From 64 bits up the codes there are ITQ of the
    # features (ROTATION_MIN_BITS above): all 60,000 / 10,000, mAP / P@100 at 64 bits 0.593 / 0.733
    # -> 0.574 / 0.751 (P@1 0.785), at 256 bits 0.602 / 0.750 (the trained layer's best: 12 epochs
    # without neighbour positives) -> 0.582 / 0.778 (P@1 0.835); ITQ of the pixels P@100 0.725 and
    # 0.752. With ITQ codes the neighbour positives help again (256 bits without them, 12 epochs:
    # 0.569 / 0.775, 526 s against 501 s), so the recipe keeps them at every length.
    # Photo views (the crops, then brightness and contrast jitter) train better features for the
    # rotation: 64 bits 0.574 / 0.751 -> 0.593 / 0.766 (P@1 0.802), 256 bits -> 0.596 / 0.788.
    "default": Recipe("two-view contrastive, positives also from the model's 20 nearest training images "
                      "(from epoch 2), temperature 0.5 up to 64 bits and 0.3 above, saturated STE; no labels "
                      "(on fashion-mnist: temperature 0.3, milder crops with brightness and contrast jitter, "
                      "1 px blur, batches of 512, 8 epochs, codes by ITQ of the features from 64 bits up; on a "
                      "colour folder: views in any colour, each image standardised, about 120,000 images seen)",
                      model={"estimator": "saturated"}, objective={**_NEIGHBOURS, "temperature": "auto"},
                      datasets={"fashion-mnist": {"batch": 512, "epochs": 8, "schedule": "cosine", "temperature": 0.3,
                                                  "views": "photo", "view_options": {"area": [0.6, 1.0]},
                                                  "lowpass": 1.0, "codes": "auto"},
                                COLOUR_FOLDER: _COLOUR_FOLDER}),
    # The default at temperature 0.5 at every length: at 512 bits the best class mAP (0.967 against
    # 0.936), at the price of many exact ties, so an indexed image is no longer sure to come back
    # first for itself.
    "kinds": Recipe("the default at temperature 0.5 at every length: images of one kind share codes "
                    "(best class mAP, many ties)",
                    model={"estimator": "saturated"},
                    objective={**_NEIGHBOURS, "temperature": 0.5}),
    "contrastive-fast": Recipe("two-view contrastive alone: each image its own only positive, no decoder pass",
                               model={"estimator": "saturated"},
                               objective={"contrastive": 1.0, "reconstruction": 0.0}),
    # The default until neighbour positives measured better at every length; kept to measure against.
    "contrastive-autoencoder": Recipe("two-view contrastive + 0.5 reconstruction (the previous default)",
                                      model={"estimator": "saturated"},
                                      objective={"contrastive": 1.0, "reconstruction": 0.5}),
    # Near-duplicate search (`hashing evaluate --task copies`): each image against an edited
    # copy of itself (JPEG, rescale, crop, rotation, blur, brightness, occlusion, noise), at a
    # low temperature; chosen by measurement (docs/experiments.md, "The copies recipe"). The 2-pixel Gaussian
    # before the encoder keeps the code off the detail that rescaling and blurring remove;
    # batches of 512 (1,022 negatives a view, lr x sqrt(8)) tell apart look-alikes that 64 do
    # not (Fashion-MNIST recall@1 0.802 -> 0.829, rescale 0.874 -> 0.920), in the same time.
    # Four view ranges go past the protocol's, where the code lost copies to pHash on
    # clothing: downscaling to 20-60 % of the side (protocol 30-60 %: its worst rescales were
    # the smallest copies), brightness x0.6-2.2 and contrast x0.6-1.8 (protocol x0.6-1.4 each:
    # light garments brightened past white), blur sigma 0.5-2 px (protocol 0.5-1.5: its worst
    # blurs were the strongest); with 64 epochs instead of 36 (1.8x the time) that took
    # Fashion-MNIST rescale / blur / brightness over four draws of the sources from 0.951 /
    # 0.984 / 0.963 (pHash 0.950 / 0.984 / 0.962: level) to 0.964 / 0.988 / 0.974.
    "copies": Recipe("the image against an edited copy of it (JPEG, crop, blur, ...), contrastive, each image "
                     "standardised and blurred (sigma 2 px), batches of 512, cosine lr over 64 epochs: "
                     "finds copies (on image folders: grey, plain margins trimmed, stretched to the square, "
                     "borders, captions, greyscale and gamma among the edits, epochs auto)",
                     model={"estimator": "saturated", "standardise": True, "lowpass": 2.0},
                     objective={"contrastive": 1.0, "reconstruction": 0.0, "views": "copies", "temperature": 0.1,
                                "asymmetric": True, "view_options": {"rescale": [0.2, 0.6], "brightness": [0.6, 2.2],
                                                                     "contrast": [0.6, 1.8], "blur": [0.5, 2.0]}},
                     train={"epochs": 64, "schedule": "cosine"}, batch=512,
                     datasets={"images": _COPIES_FOLDER, COLOUR_FOLDER: _COPIES_FOLDER},
                     folder={"channels": 1, "trim": True, "resize": "stretch"}),
    "autoencoder": Recipe("pixel reconstruction only, BatchNorm head", objective={"reconstruction": 1.0}),
    # On clothing the crops that suit unsupervised codes (35-100 % of the area) cost labelled
    # codes: Fashion-MNIST 64 bits, all 60,000 / 10,000, mAP 0.8705 at 15 epochs, 0.894 with
    # crops of 70-100 %, 0.920 with 80-100 % over 30 epochs and 0.933 over 60 (16 min on a
    # 2-core EPYC). docs/experiments.md, "Supervised".
    "supervised": Recipe("hash centres from labels on augmented views, cosine lr over 15 epochs "
                         "(on fashion-mnist 60, with crops of 80-100 % of the area)",
                         objective={"supervised": 1.0, "contrastive": 0.0, "reconstruction": 0.0},
                         train={"epochs": 15, "schedule": "cosine"},
                         datasets={"fashion-mnist": {"epochs": 60, "view_options": {"area": [0.8, 1.0]}}}),
    # The design this project started from (its first commit): an autoencoder trained on
    # reconstruction alone, with a ReLU right before the binarizer. Kept to measure against.
    "original": Recipe("the first version's design: ReLU before the binarizer, reconstruction only",
                       model={"head": "relu"}, objective={"reconstruction": 1.0}),
}


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise HashingError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


def resolve(recipe: str, dataset: str, n_images: int, **settings: Any) -> tuple["HashConfig", "TrainConfig"]:
    """(recipe, explicit settings) -> (HashConfig, TrainConfig) with nothing left to decide.

    `settings` are field names of HashConfig, Objective or TrainConfig (bits=64, views="crop",
    epochs=3, device="cpu", ...); None means "not given". `n_images` is the size of the
    training split, which the automatic batch size depends on.
    """
    from hashing.train.views import resolve_views
    from hashing.model.device import resolve_device
    from hashing.train.distributed import environment
    from hashing.model.config import HashConfig
    from hashing.train.objectives import Objective
    from hashing.train.config import TrainConfig, batch_plan

    r = get(recipe)
    groups: dict[type, dict] = {HashConfig: {}, Objective: {}, TrainConfig: {}}
    for key, value in settings.items():
        if value is None:
            continue
        owner = next((cls for cls in groups if key in _names(cls)), None)
        if owner is None or key in ("dataset", "objective", "recipe", "world_size"):
            raise HashingError(f"unknown training setting {key!r}")
        groups[owner][key] = value
    model, objective, train, auto_batch = r.settings(settings_key(dataset, groups[HashConfig].get("channels")))
    if train.get("epochs") == "auto":
        train["epochs"] = auto_epochs(n_images)
    model = {**model, **groups[HashConfig], "dataset": dataset}
    if model.get("codes") == "auto":
        model["codes"] = auto_codes(V.code_bits(model.get("bits", HashConfig.bits)))
    cfg = HashConfig(**model)
    terms = {**objective, **groups[Objective]}
    if terms.get("neighbours") and not terms.get("contrastive", Objective.contrastive) \
            and "neighbours" not in groups[Objective]:
        terms["neighbours"] = 0          # the recipe's neighbour positives lapse with its contrastive term
    if groups[Objective].get("views", objective.get("views")) != objective.get("views"):
        terms["view_options"] = groups[Objective].get("view_options", {})   # the recipe's were for its own views
    elif "view_options" in groups[Objective]:
        terms["view_options"] = {**objective.get("view_options", {}), **V.mapping("view_options",
                                                                                     groups[Objective]["view_options"])}
    if terms.get("temperature") == "auto":
        terms["temperature"] = auto_temperature(cfg.bits)
    obj = Objective(**terms)
    obj = dataclasses.replace(obj, views=resolve_views(obj.views, dataset, cfg.channels))
    tcfg = TrainConfig(**{**train, **groups[TrainConfig], "dataset": dataset, "recipe": recipe, "objective": obj})
    device = resolve_device(tcfg.device)
    world = environment().world                 # training processes under torchrun (1 without it)
    batch, scale_lr = batch_plan(tcfg.batch_size, tcfg.scale_lr, device.type, n_images, world, auto=auto_batch)
    return cfg, dataclasses.replace(tcfg, device=device.type, batch_size=batch, scale_lr=scale_lr, world_size=world)


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def default_text(name: str) -> str:
    """How the default of setting `name` is decided, for `--help`: the recipes that set it, and
    the configs' own default otherwise (imports torch: called only when help is shown)."""
    from hashing.model.config import HashConfig
    from hashing.train.objectives import Objective
    from hashing.train.config import TrainConfig

    def shown(value: Any) -> str:                    # options as the JSON a user would type
        return json.dumps(value) if isinstance(value, dict) else str(value)

    f = next(f for cls in (HashConfig, Objective, TrainConfig) for f in dataclasses.fields(cls) if f.name == name)
    base = shown(f.default_factory() if f.default is dataclasses.MISSING else f.default)
    by = {r: shown(group[name]) for r, rec in RECIPES.items() for group in (rec.model, rec.objective, rec.train)
          if name in group}
    on = {r: "; ".join(f"{shown(s[name])} on {d}" for d, s in rec.datasets.items() if name in s)
          for r, rec in RECIPES.items()}
    if not by and not any(on.values()):
        return base
    text = ", ".join(f"{by.get(r, base)} ({r}{'; ' + on[r] if on[r] else ''})" for r in RECIPES
                     if r in by or on[r])
    return text if len(by) == len(RECIPES) else f"{text}, else {base}"
