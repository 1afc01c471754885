"""`hashing`: thin click commands. Each parses options, calls one library function and
prints its result. Heavy imports (torch, faiss) happen inside the commands so that
`hashing --help` is instant."""

from __future__ import annotations

import json
import sys

import click

from hashing.codes.baselines import BASELINES
from hashing.evaluate.copies import COPY_BASELINES
from hashing.cli.options import (FloatOrAuto, IntOrAuto, JsonObject, LibraryChoice, source_options, device_option, model_option,
                                 quiet_option, setting, wait_option)
from hashing.images.datasets import SPLITS
from hashing.dedup.find import HASHES, KEEP
from hashing.images.edits import DEFAULT_EDITS, EDITS
from hashing.images.reader import CHANNELS, DEFAULT_RESIZE, IMAGE_SUFFIXES, RESIZE
from hashing.core.errors import HashingError, HashingWarning
from hashing.indexes.backends import BACKENDS
from hashing.indexes.base import DEFAULT_K
from hashing.indexes.faiss import INDEX_TYPES
from hashing.serve.limits import MAX_MEGAPIXELS, MAX_UPLOAD_MB, TOKEN_ENV
from hashing.train.recipes import RECIPES

class Group(click.Group):
    """Turns HashingError into a one-line message and exit code 1, never a traceback; a HashingWarning into
    one line "warning: ..." on stderr. Both name the settings they mention by the running command's flags
    (flag_names)."""

    def invoke(self, ctx):
        import warnings

        def running() -> click.Command:      # the subcommand being run (this group while none is chosen yet)
            name = ctx.invoked_subcommand
            return (self.get_command(ctx, name) if name else None) or self

        def show(message, category, *args, **kwargs):
            if issubclass(category, HashingWarning):
                click.echo(f"warning: {flag_names(message, running())}", err=True)
            else:
                shown(message, category, *args, **kwargs)
        shown = warnings.showwarning
        warnings.showwarning = show
        try:
            return super().invoke(ctx)
        except HashingError as e:
            raise click.ClickException(flag_names(e, running())) from None
        except OSError as e:            # the machine's, not ours: a full disk, a vanished folder, a dead mount
            raise click.ClickException(os_error_line(e)) from None
        finally:
            warnings.showwarning = shown


def flag(command: click.Command, setting: str, on: bool = True) -> str | None:
    """The option `command` takes for the library setting `setting` (the param of that name): its longest
    --option (--move-to), or its only one (-k); with on=False the off switch of an on/off flag (--no-verify).
    None when the command has no such option."""
    for param in command.params:
        if param.name == setting and isinstance(param, click.Option):
            opts = param.opts if on else param.secondary_opts
            long = [o for o in opts if o.startswith("--")]
            return max(long, key=len) if long else opts[0] if opts else None
    return None


def flag_names(e: HashingError | HashingWarning, command: click.Command) -> str:
    """A library message as `command` shows it: each setting it names (e.settings, written there as the bare
    keyword: "radius must be ...", or "verify=False" for an on/off one) becomes that command's flag
    ("--radius must be ...", "--no-verify"). Whole words only (not the k of "keep", nor a word inside a path
    or a quoted value); a setting the command has no option for stays as it is."""
    import re

    message = str(e)
    for name in getattr(e, "settings", ()):
        word = rf"(?<![\w/\\.'\"-]){re.escape(name)}"
        for value in (True, False):                     # verify=False -> --no-verify, verify=True -> --verify
            option = flag(command, name, on=value)
            if option is not None:
                message = re.sub(rf"{word}={value}(?![\w-])", lambda _: option, message)
        option = flag(command, name)
        if option is not None:
            message = re.sub(rf"{word}(?![\w/\\'\"-])", lambda _: option, message)
    return message


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error. Every write commits by one rename at its end, so what was
    there before is unchanged."""
    from hashing.core.errors import full_disk

    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    why = full_disk(e)
    if why is not None:
        return f"{why}{where}; free some space and run again (nothing already there was changed)"
    return f"{e.strerror or type(e).__name__}{where}"


def _one_process_unless_training(command: str | None) -> None:
    """Only `hashing train` runs data-parallel: N copies of any other command would only race."""
    from hashing.train.distributed import environment

    world = environment().world
    if world > 1 and command not in (None, "train"):
        raise HashingError(f"`hashing {command}` runs as one process; only `hashing train` runs under torchrun "
                           f"(WORLD_SIZE={world} here): run it without torchrun")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashing")
@click.pass_context
def cli(ctx: click.Context):
    """Binary-hashing image retrieval: learn binary codes for images, index them,
    and find similar images by Hamming distance.

    \b
    Typical use (a built-in dataset, or --images FOLDER for your own pictures):
      hashing train --dataset mnist --data-dir DIR --out runs/mnist
      hashing index --model runs/mnist --dataset mnist --data-dir DIR --split train --out idx/mnist
      hashing query digit.png --index idx/mnist -k 10
      hashing evaluate --model runs/mnist --dataset mnist --data-dir DIR
      hashing evaluate --task copies --model RUN --dataset mnist --data-dir DIR   # edited copies vs pHash
      hashing serve --index idx/mnist            # web page and JSON API on 127.0.0.1:8000
      torchrun --standalone --nproc_per_node=2 -m hashing train ...   # data-parallel training

    \b
      hashing train --images photos/ --out runs/photos
      hashing index --model runs/photos --images photos/ --out idx/photos
    """
    _one_process_unless_training(ctx.invoked_subcommand)


RECIPE_HELP = "Named preset of architecture, objective and schedule; the options below override it. " + "; ".join(
    f"{name}: {r.summary}" for name, r in RECIPES.items()) + "."


@cli.command()
@source_options()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write the checkpoint to.")
@click.option("--recipe", default="default", show_default=True, type=click.Choice(RECIPES), help=RECIPE_HELP)
@setting("--bits", type=int, help="Code length: a multiple of 8 from 8 to 1024.")
@setting("--epochs", type=int, help="Passes over the training split.")
@setting("--max-images", type=int, help="Train on the first N images of the split only (for quick trials).")
@click.option("--batch-size", type=int, default=None,
              help="Images per step.  [default: 512 (copies; default on fashion-mnist), else 64 on CPU and 512 on a "
                   "GPU; halved for small splits; with --scale-lr above 64 (hashing.train.config.batch_plan)]")
@setting("--lr", type=float, help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--scale-lr/--no-scale-lr", default=None,
              help="Scale --lr by sqrt(batch-size / 64), for large batches.  [default: on with an automatic batch "
                   "above 64]")
@setting("--schedule", type=LibraryChoice("hashing.train.config:SCHEDULES"), help="Learning-rate schedule.")
@device_option
@setting("--seed", type=int, help="Random seed (weights, shuffling, sampling): 0 to 2**32 - 1.")
@setting("--estimator", type=LibraryChoice("hashing.model.estimators:REGISTRY"),
         help="Gradient estimator of the binarizer (`hashing estimators` describes each).")
@setting("--domain", type=LibraryChoice("hashing.model.config:DOMAINS"), help="Code values fed to the decoder: {0,1} or {-1,+1}.")
@setting("--balance", type=float, help="Weight of the bit-balance term.")
@setting("--decorrelation", type=float, help="Weight of the bit-decorrelation term.")
@setting("--contrastive", type=float, help="Weight of the two-view contrastive term (no labels).")
@setting("--supervised", type=float, help="Weight of the hash-centre term (uses labels).")
@setting("--reconstruction", type=float, help="Weight of the pixel reconstruction (MSE) term.")
@setting("--views", type=LibraryChoice("hashing.train.views:VIEWS", extra=("auto",)),
         help="Random views for the contrastive/supervised terms (hashing/train/views.py); auto picks by dataset.")
@setting("--view-options", type=JsonObject(),
         help="Settings of the view family as a JSON object of its keyword arguments (hashing/train/views.py), e.g. "
              "'{\"brightness\": [0.6, 1.8]}' for copies; merged over the recipe's own when the views are its.")
@setting("--temperature", type=FloatOrAuto(),
         help="Temperature of the contrastive term (NT-Xent on unit-norm codes): lower spreads images apart, "
              "higher lets neighbours share codes. auto: 0.5 up to 64 bits, 0.3 above.")
@setting("--neighbours", type=int,
         help="Contrastive positives from the model's own K nearest training images (re-found each epoch from "
              "the second): pulls neighbourhoods onto one code; 0 = the image itself only.")
@setting("--lowpass", type=float,
         help="Gaussian blur (sigma in pixels at the model's image size) of every image before the encoder, in "
              "training and search alike: codes that ignore fine detail (rescaling, blur, JPEG, noise).")
@setting("--codes", type=LibraryChoice("hashing.model.config:CODES", extra=("auto",)),
         help="What an index stores: layer = the signs of the trained code layer; itq = the signs of an ITQ "
              "rotation of the conv features, fitted after each epoch (purer top results on clothing); auto: itq "
              "from 64 bits up, layer below.")
@click.option("--standardise/--no-standardise", default=None,
              help="Bring each image to zero mean and unit variance before the encoder, in training and search "
                   "alike: codes that ignore brightness and contrast.")
@click.option("--trim/--no-trim", default=None,
              help="Cut each image's plain margins (a frame, the empty page around clip art) before the resize, in "
                   "training and search alike.  [default: on for --recipe copies on --images, else off]")
@click.option("--compile/--no-compile", default=None, help="torch.compile the model (CUDA only).  [default: off]")
@click.option("--image-size", type=int, default=None,
              help="Images are resized to N x N, N from 16 to 256.  [default: 28 for a dataset; for --images the "
                   "folder's median shorter side, at most 32]")
@click.option("--channels", type=click.Choice([str(c) for c in CHANNELS]), default=None,
              help="1: grayscale, 3: colour.  [default: 1 for a dataset; for --images 3 if any sampled image has "
                   "colour, else 1]")
@click.option("--resize", type=click.Choice(RESIZE), default=None,
              help="How an image of another shape becomes square: crop = scale the shorter side to N and cut the "
                   "centre; pad = scale the longer side to N and centre on black; stretch = both sides to N.  "
                   f"[default: {DEFAULT_RESIZE}]")
@quiet_option
def train(dataset, data_dir, images, out, recipe, quiet, channels, **settings):
    """Train a hashing model on a dataset or a folder of images; the run folder gets
    config.json (everything needed to rebuild the model and its preprocessing), the weights,
    the loss history and a picture: reconstructions.png, or neighbours.png (test images and
    their nearest training images by code) when the recipe trains no decoder.

    With --images and no other option, a folder of ordinary photos trains a colour model at
    32 x 32 (crop to square) for content, not colour; a folder of grayscale images trains a
    grayscale one; the per-channel mean and std are measured on the folder.

    Data-parallel over N processes (one per GPU; Gloo on CPU): `torchrun --standalone
    --nproc_per_node=N -m hashing train ...`; --batch-size is then per process, and each
    step sees N x that many images (docs/training.md, "Several processes: torchrun").
    """
    from hashing.train.loop import train_on

    r = train_on(recipe, out, dataset=dataset, images=images, data_dir=data_dir, progress=not quiet,
                 channels=None if channels is None else int(channels), **settings)
    if r.rank:
        return                                    # under torchrun rank 0 speaks for the job
    if r.skipped:
        click.echo(r.skipped)
    per_epoch = sum(r.history["seconds"]) / len(r.history["seconds"])
    cfg = r.model.cfg
    click.echo(f"trained {cfg.bits}-bit model on {dataset or images} ({cfg.image_size}x{cfg.image_size}, "
               f"{cfg.channels} channel{'s' if cfg.channels > 1 else ''}, {r.device}): final loss "
               f"{r.history['epoch_loss'][-1]:.4f}, {per_epoch:.1f} s/epoch, {r.images_per_second:.0f} images/s")
    if r.world > 1:
        click.echo(f"{r.world} processes (torchrun), {r.world} x {r.batch_size} = {r.world * r.batch_size} images per step")
    if r.calibration:
        from hashing.train.calibration import line

        click.echo(f"{line(r.calibration)}: `hashing duplicates --no-verify` uses it")
    click.echo(f"saved {out}: config.json, its weights and history, {r.picture}")


@cli.command()
@model_option
@source_options(split="test", strict=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="CODES.npz to write: codes, labels (and sources, classes for --images).")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1))
@device_option
@quiet_option
def encode(run_dir, dataset, data_dir, images, split, strict, out, batch_size, device, quiet):
    """Encode a dataset split or a folder of images to packed codes (uint8, N x bits/8,
    numpy.packbits order) and labels."""
    from hashing.workflows.encode import encode

    r = encode(run_dir, out, dataset=dataset, images=images, split=split, data_dir=data_dir, batch_size=batch_size,
               device=device, progress=not quiet, strict=strict)
    click.echo(f"wrote {r.count} {r.bits}-bit codes to {r.out} ({r.images_per_second:.0f} images/s)")
    if r.skipped:
        click.echo(r.skipped)


@cli.command()
@model_option
@source_options(split="train", strict=True)
@click.option("--out", default=None, help="Index folder (FAISS), or a Milvus Lite .db file or http(s) URI (Milvus).")
@click.option("--index-type", default="flat", show_default=True,
              help=f"{', '.join(INDEX_TYPES)}, or any faiss binary factory string such as BHNSW32 "
                   f"(Milvus: flat or ivf).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Storage engine; default: milvus for a .db path or http(s) URI, else faiss.")
@click.option("--uri", default=None, help="Milvus URI (alias of --out for --backend milvus).")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("--append", is_flag=True, help="Add to an existing index built by the same model.")
@click.option("--sync", is_flag=True,
              help="Bring an existing index in step with --images: add new files, remove deleted ones, re-encode "
                   "changed ones (size/mtime, then content hash); unchanged items keep their ids.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1))
@wait_option
@device_option
@quiet_option
def index(run_dir, dataset, data_dir, images, split, strict, out, index_type, backend, uri, collection, append,
          sync, batch_size, wait, device, quiet):
    """Encode a dataset split or a folder of images and store the codes in a binary index."""
    from hashing.workflows.index import build_index

    if (out is None) == (uri is None):
        raise click.UsageError("give exactly one of --out or --uri")
    if sync:
        _sync(run_dir, images, split, uri if uri is not None else out, collection, batch_size, wait, device, quiet,
              backend, dataset=dataset, append=append, strict=strict, index_type=index_type)
        return
    r = build_index(run_dir, uri if uri is not None else out, dataset=dataset, split=split, images=images,
                    data_dir=data_dir, index_type=index_type, backend=backend, collection=collection, append=append,
                    batch_size=batch_size, device=device, progress=not quiet, strict=strict, wait=wait)
    click.echo(f"indexed {r.added} items ({r.total} in all, {r.bits} bits, {r.index_type}) at {r.location} "
               f"({r.images_per_second:.0f} images/s)")
    if r.skipped:
        click.echo(r.skipped)


def _sync(run_dir, images, split, location, collection, batch_size, wait, device, quiet, backend, **unused):
    """`hashing index --sync`: the options a sync does not take are refused by name."""
    from hashing.indexes.backends import backend_for
    from hashing.workflows.sync import sync_index

    backend_for(location, backend)                 # an explicit --backend must agree with the location
    for name, value in unused.items():
        if value not in (None, False) and not (name == "index_type" and value == "flat"):
            raise click.UsageError(f"--sync does not take --{name.replace('_', '-')} (a sync keeps the index's own "
                                   f"settings{'; it reads --images' if name == 'dataset' else ''})")
    if images is None:
        raise click.UsageError("--sync needs --images FOLDER (the folder the index mirrors)")
    r = sync_index(run_dir, location, images=images, split=split, collection=collection, batch_size=batch_size,
                   device=device, progress=not quiet, wait=wait)
    click.echo(r.summary())
    if r.skipped:
        click.echo(r.skipped)
    if r.kept_old:
        click.echo(f"kept the old items of {len(r.kept_old)} changed file(s) that could not be read: "
                   f"{', '.join(r.kept_old[:3])}{' ...' if len(r.kept_old) > 3 else ''}")


@cli.command()
@click.argument("ids", nargs=-1, type=click.IntRange(0))
@click.option("--index", "index_location", required=True, help="Index folder, Milvus Lite .db file or Milvus URI.")
@click.option("--source", "sources", multiple=True,
              help="Remove the items of this file (as `hashing info --items` shows it, or a path to it); repeatable.")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@wait_option
@quiet_option
def remove(ids, index_location, sources, collection, wait, quiet):
    """Remove items from an index by ID (and/or --source PATH). All of them go in one commit, or none:
    an unknown id or source is an error and nothing is removed."""
    from hashing.workflows.inventory import remove_items

    r = remove_items(index_location, list(ids), sources=list(sources), collection=collection, wait=wait)
    click.echo(f"removed {r.removed} item{'s' if r.removed != 1 else ''} from {r.location} ({r.total} left)")


@cli.command()
@click.argument("index_location", metavar="INDEX|RUN")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("--items", "with_items", is_flag=True, help="List every item: id, label, source.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"count", "bits", "backend", "index_type", "model", "created", "updated", '
                   '"disk_bytes", ..., "items": [{"id", "source", "label", "class"}]}; for a run folder {"bits", '
                   '"recipe", "image", "duplicate_threshold", "calibration", ...}.')
def info(index_location, collection, with_items, as_json):
    """What an index holds: backend, index type, bits, the model, item count, when it was created and
    last updated, its size on disk; --items lists the items. Given a run folder (from `hashing train`):
    its bits, recipe, how it reads an image, and the threshold `hashing duplicates --no-verify` uses."""
    from pathlib import Path

    if (Path(index_location) / "config.json").is_file() and not (Path(index_location) / "meta.json").exists():
        return _run_info(index_location, as_json)
    from hashing.workflows.inventory import index_summary

    d = index_summary(index_location, collection=collection, items=with_items)
    if as_json:
        click.echo(json.dumps(d))
        return
    size = "unknown (a server)" if d["disk_bytes"] is None else f"{d['disk_bytes'] / 1e6:.2f} MB"
    rows = [("index", d["location"] + (f" (collection {d['collection']})" if "collection" in d else "")),
            ("backend", d["backend"]), ("index type", d["index_type"]), ("bits", d["bits"]), ("items", d["count"]),
            ("next id", d["next_id"]), ("model", f"{d['model']['run_dir']} (fingerprint {d['model']['fingerprint']})"),
            ("created", d["created"] or "not recorded"), ("updated", d["updated"] or "not recorded"),
            ("disk size", size)]
    if d["classes"]:
        rows.append(("classes", ", ".join(d["classes"])))
    for name, value in rows:
        click.echo(f"{name:<11} {value}")
    if with_items:
        click.echo(f"  {'id':>8}  {'label':>5}  source")
        for it in d["items"]:
            label = "-" if it["label"] is None else it["class"] or str(it["label"])
            click.echo(f"  {it['id']:>8}  {label:>5}  {it['source']}")


def _run_info(run_dir: str, as_json: bool) -> None:
    from hashing.train.calibration import CANDIDATES, run_summary, line

    d = run_summary(run_dir)
    if as_json:
        click.echo(json.dumps(d))
        return
    im = d["image"]
    cal = d["calibration"]
    rows = [("run", d["run"]), ("fingerprint", d["fingerprint"]), ("bits", d["bits"]),
            ("trained on", d["dataset"] + (f" ({d['data_dir']})" if d["data_dir"] else "")),
            ("recipe", f"{d['recipe']}, {d['epochs']} epochs"),
            ("image", f"{im['size']}x{im['size']}, {im['channels']} channel{'s' if im['channels'] > 1 else ''}, "
                      f"{im['resize']}, transparency on {im['background']}, EXIF {'on' if im['exif'] else 'off'}, "
                      f"margins {'trimmed' if im['trim'] else 'kept'}"),
            ("codes", d["codes"]),
            ("duplicates", (f"{line(cal)}: `hashing duplicates --no-verify` uses it" if cal else
                            f"no calibration: `hashing duplicates --no-verify` uses bits/8 = {d['duplicate_threshold']} "
                            f"(train with --recipe copies for one)")
             + f"; checked pairs (the default) start from each file's {CANDIDATES} nearest codes within {d['candidate_radius']}")]
    for name, value in rows:
        click.echo(f"{name:<11} {value}")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--index", "index_location", required=True, help="Index folder, Milvus Lite .db file or Milvus URI.")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("-k", "k", default=None, type=int,
              help="Number of neighbours per image; with --radius, at most this many of those within it.  "
                   f"[default: {DEFAULT_K}, or all within --radius]")
@click.option("--radius", type=int, default=None, help="Return every item within this Hamming distance.")
@click.option("--invert", is_flag=True, help="Invert the image first (for dark digits on a light background).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: [{image, results: [{id, distance, label, source, class}]}].")
@click.option("--grid", type=click.Path(dir_okay=False), default=None, help="Write a PNG: each query then its neighbours.")
def query(images, index_location, collection, k, radius, invert, as_json, grid):
    """Find the nearest indexed items of each IMAGE by Hamming distance.

    Any size and mode is accepted: the image is brought to the model's input exactly as its
    training images were (channels, size, resize rule). MNIST-style models expect a white digit on a black background (use --invert
    for a dark digit on white paper).
    """
    from hashing.workflows.query import query_images

    results = query_images(list(images), index_location, k=k, radius=radius, collection=collection, invert=invert,
                           grid=grid)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
        return
    for r in results:
        click.echo(f"{r.image}: {len(r.hits)} results")
        click.echo(f"  {'rank':>4}  {'id':>8}  {'distance':>8}  {'label':>5}  source")
        for rank, h in enumerate(r.hits, 1):
            label = "-" if h.label is None else (r.class_of(h) or str(h.label))
            click.echo(f"  {rank:>4}  {h.id:>8}  {h.distance:>8}  {label:>5}  {h.source}")
    if grid:
        click.echo(f"wrote {grid}")


def _shown(text: str) -> str:
    """A path (or a line naming one) on one line: control characters, a newline in a file name
    included, written as escapes (JSON and CSV outputs keep the name as it is)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path())
@click.option("--model", "run_dir", default=None, type=click.Path(),
              help="Run folder of a model trained with the copies recipe (`hashing train --images FOLDER --recipe "
                   "copies`); needed for --hash model.")
@click.option("--threshold", default="auto", show_default=True, type=IntOrAuto(),
              help="Largest Hamming distance between copies. auto: with the pixel check, a quarter of the bits (16 "
                   "of 64; each file's 20 nearest codes within it are checked); with --no-verify, the model's "
                   "calibrated operating point (`hashing info RUN`), 10 for phash and dhash, 31 for pdq.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Keep a pair only when the two pictures' pixels match once aligned (rotation, scale, crop, a "
                   "caption allowed: OpenCV, the copies extra); --no-verify trusts the codes alone.")
@click.option("--hash", "hash_name", default="model", show_default=True,
              type=click.Choice(HASHES),
              help="model: the codes of --model; phash, dhash (imagehash, 64 bits), pdq (256 bits): a perceptual "
                   "hash of each file, to compare on your own pictures.")
@click.option("--keep", default="largest", show_default=True,
              type=click.Choice(KEEP),
              help="The file each group keeps: most pixels (then lossless over JPEG, then bytes), oldest or newest modification time, "
                   "shortest path, or the first found.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write {threshold, hash, groups: [{files: [{path, distance, keep}]}], skipped} here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="Write one row per file in a group here: group, path, distance, keep.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML page (thumbnails inline) of every group, to check before moving.")
@click.option("--move-to", type=click.Path(), default=None,
              help="Move every file but the kept one of each group into this folder (relative paths kept, nothing "
                   "overwritten, nothing deleted), with an undo log there.")
@click.option("--dry-run", is_flag=True, help="With --move-to or --undo: print what would move, move nothing.")
@click.option("--against", default=None,
              help="An index (folder, Milvus Lite .db or URI) built by a copies model: list the files of FOLDERS "
                   "that already have a copy in it, grouped under that copy (nothing is added to the index); "
                   "--move-to then moves those files.")
@click.option("--undo", "undo_log", type=click.Path(dir_okay=False), default=None,
              help="Put back the files a --move-to run moved, from its log (hashing-moves-*.jsonl).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@device_option
@quiet_option
def duplicates(folders, run_dir, threshold, verify, hash_name, keep, json_out, csv_out, report, move_to, dry_run,
               against, undo_log, batch_size, device, quiet):
    """Find the files in FOLDERS that are copies of each other (re-saved, resized, cropped, recoloured,
    captioned): groups, largest first, each file with its distance to the group's kept file.

    Codes propose, pixels decide: each file's nearest codes are checked by aligning the two pictures
    (--no-verify: the codes alone). A group is a star: every member a checked copy of one centre (the
    file with the most copies), so look-alikes never chain into one group. Unreadable files are listed as skipped; a file reached
    twice counts once. Nothing is ever deleted: --move-to moves, --undo LOG moves back.
    """
    def echo(line: str) -> None:            # every line names files: each as _shown writes it, never a crash
        click.echo(_shown(line))

    if undo_log is not None:
        if folders or move_to:
            raise click.UsageError("--undo LOG takes no folders and no --move-to")
        from hashing.dedup.moves import undo

        r = undo(undo_log, dry_run=dry_run)
        for line in r.notes:
            echo(line)
        if dry_run:
            for dst, src in r.moved:
                echo(f"would move back {_shown(dst)} -> {_shown(src)}")
        echo(f"{'would move' if dry_run else 'moved'} back {len(r.moved)} files from {undo_log}"
             + (" (dry run: nothing moved)" if dry_run else ""))
        for line in r.problems:
            echo(f"not moved back: {line}")
        if r.problems:
            sys.exit(1)
        return
    if not folders:
        raise click.UsageError("give at least one FOLDER (or --undo LOG)")
    from hashing.dedup.find import run

    job = run(list(folders), run_dir, threshold=threshold, hash_name=hash_name, keep=keep, json_out=json_out,
              csv_out=csv_out, report=report, move_to=move_to, dry_run=dry_run, batch_size=batch_size, device=device,
              progress=not quiet, against=against, verify=verify)
    found = job.found
    if not found.files and not found.skipped:
        echo(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(folders)}: "
             f"nothing to compare")
        return
    for path, why in found.skipped:
        echo(f"skipped {_shown(why)}")
    for n, group in enumerate(found.groups, 1):
        echo(f"group {n} ({len(group)} files)")
        for m in group:
            echo(f"  {'keep' if m.keep else '    '}  {m.distance:>4}  {_shown(m.path)}")
    if found.aliases:
        echo(f"{found.aliases} path(s) led to a file already seen (symlinks, folders given twice): counted once")
    for line in job.notes:
        echo(line)
    echo(found.summary())
    for path in job.written:
        echo(f"wrote {path}")
    if dry_run:
        for src, dst in job.moves:
            echo(f"would move {_shown(src)} -> {_shown(dst)}")
        echo(f"would move {len(job.moves)} files to {move_to} (dry run: nothing moved)")
    elif move_to is not None and not job.moves:
        echo("nothing to move: no group has a file besides the kept one")
    elif job.moved is not None:
        echo(f"moved {len(job.moved.moved)} files to {move_to}; undo with: "
             f"hashing duplicates --undo {job.moved.log}")
        for line in job.moved.problems:
            echo(f"not moved: {line}")
        if job.moved.problems:
            sys.exit(1)


@cli.command()
@click.option("--index", "index_location", required=True, help="Index folder, Milvus Lite .db file or Milvus URI.")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 (or ::) answers other machines too.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port; 0 picks a free one (printed).")
@click.option("--token", envvar=TOKEN_ENV, default=None,
              help="Secret that POST /items must carry (Authorization: Bearer TOKEN); without one, additions are "
                   f"off.  [env: {TOKEN_ENV}]")
@click.option("--read-only", is_flag=True, help="Refuse every addition, token or not.")
@click.option("--max-upload", "max_upload_mb", default=MAX_UPLOAD_MB, show_default=True, type=float,
              help="Largest request body in MB (larger uploads get 413).")
@click.option("--max-megapixels", default=MAX_MEGAPIXELS, show_default=True, type=float,
              help="Largest image decoded, in megapixels (larger uploads are refused from their header).")
@click.option("--uploads", type=click.Path(file_okay=False), default=None,
              help="Folder for images added through POST /items.  [default: INDEX/uploads for FAISS, "
                   "FILE.db.uploads for Milvus Lite; needed for a Milvus server]")
@wait_option
@device_option
def serve(index_location, collection, host, port, token, read_only, max_upload_mb, max_megapixels, uploads, wait,
          device):
    """Serve an index over HTTP: a web page at /, a JSON API (/search, /items, /health), its docs at /docs.

    Loads the model and the index once, then answers until Ctrl-C or SIGTERM. Needs the serve extra
    (pip install 'hashing[serve]').
    """
    from hashing.serve.app import serve as run

    run(index_location, collection=collection, host=host, port=port, token=token, read_only=read_only,
        max_upload_mb=max_upload_mb, uploads=uploads, device=device,
        on_ready=lambda line: click.echo(line, err=False) or sys.stdout.flush(), wait=wait,
        max_megapixels=max_megapixels)
    click.echo("stopped")


@cli.command()
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of each estimator's forward value and backward gradient against the input.")
def estimators(plot):
    """List the binarizer's gradient estimators (use one with `hashing train --estimator NAME`)."""
    from hashing.model import estimators as est

    width = max(map(len, est.names()))
    for name in est.names():
        click.echo(f"{name:<{width}}  {est.summary_of(name)}")
    if plot:
        import torch

        from hashing.core.atomic import check_output_file
        from hashing.images.plots import estimator_curves

        check_output_file(plot, "plot")

        x = torch.linspace(-3, 3, 301)
        curves = {}
        for name in est.names():
            fwd, grad = est.curves(name, x, seed=0) if est.get(name).stochastic else est.curves(name, x)
            curves[name] = (x.numpy(), fwd.numpy(), grad.numpy())
        estimator_curves(curves, plot)
        click.echo(f"wrote {plot}")


@cli.command()
@model_option
@source_options()
@click.option("--task", type=click.Choice(["classes", "copies"]), default="classes", show_default=True,
              help="classes: relevant = same label (database = --database-split, queries = --query-split). "
                   "copies: relevant = the image an edited copy was made from (database = --split).")
@click.option("--database-split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--query-split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="--task copies: the split that is the database (a folder without train/ and test/: all of it).  "
                   "[default: test]")
@click.option("--k", "ks", default=None,
              help="--task classes: comma-separated k for precision@k, each at most the database's size.  "
                   "[default: 1,10,100,1000, those the database can answer]")
@click.option("--copies", type=int, default=None,
              help="--task copies: how many database images get edited copies (drawn with --seed), at most the "
                   "split's size.  [default: 1000, or all of a smaller split]")
@click.option("--edits", default=None,
              help="--task copies: comma-separated edits, one copy of each source per edit: "
                   f"{', '.join(EDITS)}.  [default: {','.join(DEFAULT_EDITS)}]")
@click.option("--baselines", default=None,
              help=f"Comma-separated; '' for none. classes: lsh, pcah, itq (same bit count, raw pixels), l2 (exact "
                   f"float kNN).  [default: {','.join(BASELINES)}]  copies: phash, dhash, ahash, whash, pdq "
                   f"(perceptual hashes of the files), itq, lsh, pcah.  [default: {','.join(COPY_BASELINES)}]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the baselines' randomness and the copies.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Folder for the pictures: pr_curve.png, precision_at_k.png, retrieval.png (classes); "
                   "copies_recall.png, copies_edits.png (copies).")
@device_option
@quiet_option
def evaluate(run_dir, dataset, data_dir, images, task, database_split, query_split, split, ks, copies, edits,
             baselines, seed, json_out, plots, device, quiet):
    """Retrieval quality of the model beside baselines at the same bit count.

    --task classes (default): precision@k, mAP, mAP@1000 and radius-2 precision/recall; every
    query ranks the whole database by Hamming distance; relevant = same label. With --images,
    FOLDER/train is the database and FOLDER/test the queries (class folders are the labels).

    --task copies: near-duplicate search. Edited copies (JPEG, rescale, crop, rotation,
    brightness/contrast, blur, noise, overlay, combinations, flip) of --copies database images
    are the queries, each relevant only to its source; recall@1, recall@10, mAP (mean
    reciprocal rank) and the true-positive rate at the Hamming threshold with a false-positive
    rate of 1e-3 over all non-copy pairs, overall and per edit, beside perceptual hashes.

    Tied distances count as the expectation over a random order within the tie.
    """
    names = None if baselines is None else tuple(b.strip() for b in baselines.split(",") if b.strip())
    if task == "copies":
        from hashing.evaluate.copies import evaluate_copies

        report = evaluate_copies(run_dir, dataset=dataset, data_dir=data_dir, images=images, split=split,
                                 copies=copies, edits=DEFAULT_EDITS if edits is None else edits.split(","),
                                 baselines=COPY_BASELINES if names is None else names, seed=seed, json_out=json_out,
                                 plots=plots, device=device, progress=not quiet)
        pictures, notes = "copies_recall.png, copies_edits.png", []
    else:
        given = [f"--{o}" for o, v in (("split", split), ("copies", copies), ("edits", edits)) if v is not None]
        if given:
            raise click.UsageError(f"{given[0]} belongs to --task copies")
        from hashing.evaluate.classes import evaluate as run

        k_list = None
        if ks is not None:
            try:
                k_list = tuple(int(k) for k in ks.split(",") if k.strip())
            except ValueError:
                raise click.BadParameter(f"--k must be comma-separated integers, got {ks!r}") from None
            if not k_list or min(k_list) < 1:
                raise click.BadParameter("--k needs positive integers")
        report = run(run_dir, dataset=dataset, data_dir=data_dir, database_split=database_split,
                     query_split=query_split, ks=k_list, baselines=BASELINES if names is None else names, plots=plots,
                     device=device, progress=not quiet, seed=seed, json_out=json_out, images=images)
        pictures, notes = "pr_curve.png, precision_at_k.png, retrieval.png", report.notes()
    click.echo(report.table())
    for note in notes:
        click.echo(note)
    if json_out:
        click.echo(f"wrote {json_out}")
    if plots:
        click.echo(f"wrote {pictures} in {plots}")


def main() -> None:
    cli(prog_name="hashing")


if __name__ == "__main__":
    sys.exit(main())
