"""`hashing`: thin click commands. Each parses options, calls one library function and
prints its result. Heavy imports (torch, faiss) happen inside the commands so that
`hashing --help` is instant."""

from __future__ import annotations

import json
import sys

import click

from hashing.errors import HashingError

DATASET_HELP = "mnist, fashion-mnist (torchvision; offline with --data-dir) or digits (scikit-learn, bundled)."
DATA_DIR_HELP = "Folder with the torchvision layout DIR/MNIST/raw/*-ubyte (FashionMNIST/raw for fashion-mnist); no download."


class Group(click.Group):
    """Turns HashingError into a one-line message and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HashingError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashing")
def cli():
    """Binary-hashing image retrieval: learn binary codes for images, index them,
    and find similar images by Hamming distance.

    \b
    Typical use:
      hashing train --dataset mnist --data-dir DIR --out runs/mnist
      hashing index --model runs/mnist --dataset mnist --data-dir DIR --split train --out idx/mnist
      hashing query digit.png --index idx/mnist -k 10
      hashing evaluate --model runs/mnist --dataset mnist --data-dir DIR
    """


def _dataset_option(required=True):
    return click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist", "digits"]), required=required,
                        help=DATASET_HELP)


def _data_dir_option():
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP)


@cli.command()
@_dataset_option()
@_data_dir_option()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write the checkpoint to.")
@click.option("--bits", default=512, show_default=True, help="Code length: a multiple of 8 from 8 to 1024.")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Passes over the training split.  [default: 5; the supervised recipe: 15]")
@click.option("--batch-size", default=None, type=click.IntRange(2),
              help="Images per step. [default: 64 on CPU; on a GPU 512 with --scale-lr, halved until an epoch has 32 steps]")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--scale-lr/--no-scale-lr", default=None,
              help="Scale --lr by sqrt(batch-size / 64), for large batches. [default: on with the GPU's default batch]")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default=None,
              help="Learning-rate schedule.  [default: constant; the supervised recipe: cosine]")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="auto = CUDA when available, else CPU.")
@click.option("--seed", default=0, show_default=True, help="Random seed (weights, shuffling, sampling).")
@click.option("--recipe", default="default", show_default=True,
              help="Named preset of architecture and objective: default (= contrastive: two-view contrastive + "
                   "0.5 reconstruction, no labels), contrastive-fast (no decoder), autoencoder (reconstruction "
                   "only), supervised (hash centres from labels, augmented), seed (the original: ReLU before "
                   "the binarizer, reconstruction only). Options below override it.")
@click.option("--estimator", default=None, help="Gradient estimator of the binarizer (see `hashing estimators`).")
@click.option("--domain", type=click.Choice(["01", "pm1"]), default=None, help="Code values fed to the decoder: {0,1} or {-1,+1}.")
@click.option("--balance", type=float, default=None, help="Weight of the bit-balance term.")
@click.option("--decorrelation", type=float, default=None, help="Weight of the bit-decorrelation term.")
@click.option("--contrastive", type=float, default=None, help="Weight of the two-view contrastive term (no labels).")
@click.option("--supervised", type=float, default=None, help="Weight of the hash-centre term (uses labels).")
@click.option("--reconstruction", type=float, default=None, help="Weight of the pixel reconstruction (MSE) term.")
@click.option("--views", type=click.Choice(["auto", "affine", "crop"]), default=None,
              help="Random views for the contrastive/supervised terms: affine jitter, or crop-and-resize with "
                   "mirroring (objects, not digits). auto = crop for fashion-mnist, affine otherwise.")
@click.option("--compile/--no-compile", default=False, show_default=True, help="torch.compile the model (CUDA only).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(dataset, data_dir, out, bits, epochs, batch_size, lr, scale_lr, schedule, device, seed, recipe, estimator, domain,
          balance, decorrelation, contrastive, supervised, reconstruction, views, compile, quiet):
    """Train a hashing autoencoder; RUN_DIR gets weights, config.json, history and reconstructions.png."""
    from hashing.bits import check_bits
    from hashing.train import TrainConfig, apply_recipe, recipe_train, train as run

    check_bits(bits)
    model_opts = {k: v for k, v in {"bits": bits, "estimator": estimator, "domain": domain}.items() if v is not None}
    obj_opts = {k: v for k, v in {"balance": balance, "decorrelation": decorrelation, "contrastive": contrastive,
                                  "supervised": supervised, "reconstruction": reconstruction,
                                  "views": views}.items() if v is not None}
    if estimator is not None:
        from hashing import estimators
        estimators.get(estimator)  # unknown names fail here, before the data load
    cfg, obj = apply_recipe(recipe, model_opts, obj_opts)
    train_opts = {**recipe_train(recipe), **{k: v for k, v in {"epochs": epochs, "schedule": schedule}.items() if v is not None}}
    tcfg = TrainConfig(dataset=dataset, data_dir=data_dir, batch_size=batch_size, lr=lr, scale_lr=scale_lr, device=device,
                       seed=seed, recipe=recipe, objective=obj, compile=compile, **train_opts)
    r = run(cfg, tcfg, out, progress=not quiet)
    per_epoch = sum(r.history["seconds"]) / len(r.history["seconds"])
    click.echo(f"trained {cfg.bits}-bit model on {dataset} ({r.device}): final loss {r.history['epoch_loss'][-1]:.4f}, "
               f"{per_epoch:.1f} s/epoch, {r.images_per_second:.0f} images/s")
    click.echo(f"saved {out}/model.safetensors, config.json, history.json, reconstructions.png")


@cli.command()
@click.option("--model", "run_dir", required=True, type=click.Path(), help="Run folder written by `hashing train`.")
@_dataset_option()
@_data_dir_option()
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CODES.npz to write (codes, labels).")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def encode(run_dir, dataset, data_dir, split, out, batch_size, device, quiet):
    """Encode a dataset split to packed codes (uint8, N x bits/8, numpy.packbits order) and labels."""
    from hashing.retrieval import encode_dataset

    r = encode_dataset(run_dir, dataset, split, out, data_dir, batch_size, device, progress=not quiet)
    click.echo(f"wrote {r.count} {r.bits}-bit codes to {r.out} ({r.images_per_second:.0f} images/s)")


@cli.command()
@click.option("--model", "run_dir", required=True, type=click.Path(), help="Run folder written by `hashing train`.")
@_dataset_option(required=False)
@_data_dir_option()
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Index every PNG/JPEG under this folder (recursively) instead of a dataset.")
@click.option("--out", default=None, help="Index folder (FAISS), or a Milvus Lite .db file or http(s) URI (Milvus).")
@click.option("--index-type", default="flat", show_default=True,
              help="flat (exact), hnsw, ivf, or any faiss binary factory string such as BHNSW32.")
@click.option("--backend", type=click.Choice(["faiss", "milvus"]), default=None,
              help="Storage engine; default: milvus for a .db path or http(s) URI, else faiss.")
@click.option("--uri", default=None, help="Milvus URI (alias of --out for --backend milvus).")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("--append", is_flag=True, help="Add to an existing index built by the same model.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index(run_dir, dataset, data_dir, split, images, out, index_type, backend, uri, collection, append, batch_size,
          device, quiet):
    """Encode a dataset split or a folder of images and store the codes in a binary index."""
    from hashing.retrieval import build_index

    if (out is None) == (uri is None):
        raise click.UsageError("give exactly one of --out or --uri")
    r = build_index(run_dir, uri or out, dataset, split, images, data_dir, index_type, backend, collection, append,
                    batch_size, device, progress=not quiet)
    click.echo(f"indexed {r.added} items ({r.total} in all, {r.bits} bits, {r.index_type}) at {r.location} "
               f"({r.images_per_second:.0f} images/s)")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--index", "index_location", required=True, help="Index folder, Milvus Lite .db file or Milvus URI.")
@click.option("--collection", default=None, help="Milvus collection name (default: hashing).")
@click.option("-k", "k", default=10, show_default=True, type=int, help="Number of neighbours per image.")
@click.option("--radius", type=int, default=None, help="Return every item within this Hamming distance instead of k.")
@click.option("--invert", is_flag=True, help="Invert the image first (for dark digits on a light background).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: [{image, results: [{id, distance, label, source}]}].")
@click.option("--grid", type=click.Path(dir_okay=False), default=None, help="Write a PNG: each query then its neighbours.")
def query(images, index_location, collection, k, radius, invert, as_json, grid):
    """Find the nearest indexed items of each IMAGE by Hamming distance.

    Any size and mode is accepted: the image is made grayscale and resized to the model's
    input. MNIST-style models expect a white digit on a black background (use --invert
    for a dark digit on white paper).
    """
    from hashing.retrieval import query_images

    results = query_images(list(images), index_location, k, radius, collection, invert, grid)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
        return
    for r in results:
        click.echo(f"{r.image}: {len(r.hits)} results")
        click.echo(f"  {'rank':>4}  {'id':>8}  {'distance':>8}  {'label':>5}  source")
        for rank, h in enumerate(r.hits, 1):
            label = "-" if h.label is None else str(h.label)
            click.echo(f"  {rank:>4}  {h.id:>8}  {h.distance:>8}  {label:>5}  {h.source}")
    if grid:
        click.echo(f"wrote {grid}")


@cli.command()
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of each estimator's forward value and backward gradient against the input.")
def estimators(plot):
    """List the binarizer's gradient estimators (use one with `hashing train --estimator NAME`)."""
    from hashing import estimators as est

    width = max(map(len, est.names()))
    for name in est.names():
        click.echo(f"{name:<{width}}  {est.describe(name)}")
    if plot:
        from hashing.plots import estimator_curves
        import torch

        x = torch.linspace(-3, 3, 301)
        curves = {}
        for name in est.names():
            fwd, grad = est.curves(name, x, seed=0) if est.get(name).stochastic else est.curves(name, x)
            curves[name] = (x.numpy(), fwd.numpy(), grad.numpy())
        estimator_curves(curves, plot)
        click.echo(f"wrote {plot}")


@cli.command()
@click.option("--model", "run_dir", required=True, type=click.Path(), help="Run folder written by `hashing train`.")
@_dataset_option()
@_data_dir_option()
@click.option("--database-split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--query-split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--k", "ks", default="1,10,100,1000", show_default=True, help="Comma-separated k for precision@k.")
@click.option("--baselines", default="lsh,pcah,itq,l2", show_default=True,
              help="Comma-separated: lsh, pcah, itq (same bit count, raw pixels), l2 (exact float kNN); '' for none.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Folder for pr_curve.png, precision_at_k.png and retrieval.png.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(run_dir, dataset, data_dir, database_split, query_split, ks, baselines, json_out, plots, device, quiet):
    """Precision@k, mAP, mAP@1000 and radius-2 precision/recall of the model beside LSH, PCAH, ITQ and L2.

    Every query ranks the whole database by Hamming distance; relevant = same label; tied
    distances count as the expectation over a random order within the tie.
    """
    from hashing.atomic import write_json
    from hashing.evaluation import evaluate as run

    try:
        k_list = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise click.BadParameter(f"--k must be comma-separated integers, got {ks!r}") from None
    if not k_list or min(k_list) < 1:
        raise click.BadParameter("--k needs positive integers")
    names = tuple(b.strip() for b in baselines.split(",") if b.strip())
    report = run(run_dir, dataset, data_dir, database_split, query_split, k_list, names, plots, device,
                 progress=not quiet)
    click.echo(report.table())
    if json_out:
        write_json(json_out, report.to_json())
        click.echo(f"wrote {json_out}")
    if plots:
        click.echo(f"wrote {plots}/pr_curve.png, precision_at_k.png, retrieval.png")


def main() -> None:
    cli(prog_name="hashing")


if __name__ == "__main__":
    sys.exit(main())
