"""`oiv4 features`: one vector per stored image, per model, for similarity search."""

from __future__ import annotations

import typer
from rich.console import Console

from oiv4.cli.app import app
from oiv4.cli.app import console as err
from oiv4.cli.fetch_view import set_progress
from oiv4.cli.guard import writing
from oiv4.cli.logs import LogSettings, emit_summary
from oiv4.cli.options import settings_command
from oiv4.contracts.errors import FeaturesError
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage
from oiv4.run.features import FeaturesExecutorSettings, features_set
from oiv4.stages.features import FeaturesSettings

PANEL = "Similarity"


@app.command("features", rich_help_panel=PANEL)
@settings_command({"settings": FeaturesSettings, "executor": FeaturesExecutorSettings, "log": LogSettings})
def features_cmd(
    settings: FeaturesSettings,
    executor: FeaturesExecutorSettings,
    log: LogSettings,
    image_set: str = typer.Argument(..., metavar="SET", help="targets, validation, train or extended_targets."),
    root: str = typer.Option(
        ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
    ),
) -> None:
    """Compute one vector per stored image of SET with a pretrained network (default vgg16-fc2: 4096-d).

    Output, one pair per plan shard, in plan order, the layout embedding-reader and autofaiss read as it is:
    R/features/<model>/<set>/img_emb/img_emb_NNNNN.npy (N x d, float16) and metadata/metadata_NNNNN.parquet
    (image_id, row). Read it back with oiv4.open(R)[SET].features(model); oiv4 neighbors computes exact
    ground truth from it.

    Every stored image ends with a vector or a recorded reason in the features ledger (oiv4 status; oiv4 sql:
    features_<model>_<set>). A killed run resumes from its last batch, byte-identical. The model, the weights'
    SHA-256, the preprocessing and the dtype are recorded per shard; resuming with others is refused unless
    --force-settings. Weights: --weights FILE, else the torch hub cache (clip-vit-b-32: the Hugging Face cache),
    downloaded on first use. One shard process by default: it keeps every core busy. Needs the features extra (in
    the oiv4 clone: pip install '.[features]'); clip-vit-b-32 also needs the clip extra.

    Examples:

      oiv4 features targets --root /data/open_images

      oiv4 features validation --root R --model resnet50 --dtype float32

      oiv4 features train --root R --weights vgg16-397923af.pth
    """
    name = ImageSet(image_set).value if image_set in ImageSet.__members__ else image_set
    if name not in ImageSet.__members__:
        raise FeaturesError(f"unknown set {image_set!r}: choose one of {', '.join(s.value for s in ImageSet)}")
    with writing(root, "oiv4 features") as storage, set_progress(err, name, log, "features", transfers=False) as on:
        summary = features_set(storage, name, settings, executor, progress=on)
    emit_summary("features", summary, log, set=name)
    if log.log_format == "json":
        return  # JSON logs: stderr holds JSON lines only
    line = f"features: {name} ({summary.model}, {summary.dim}-d): {summary.vectors:,} vectors"
    if summary.vectors and summary.elapsed_s:
        line += f" ({summary.images_per_s:,.1f} images/s)"
    line += f", {summary.already:,} already done"
    if summary.failed:
        line += ", [red]no vector: " + ", ".join(f"{k} {v:,}" for k, v in summary.failed.most_common()) + "[/red]"
    err.print(line)
    if summary.waiting:
        err.print(
            f"  [yellow]{len(summary.waiting)} shard(s) not fully stored yet[/yellow] (shards {summary.waiting[:5]}"
            f"{'...' if len(summary.waiting) > 5 else ''}): finish oiv4 build / fetch, then run this again"
        )
    if summary.weights_sha256:
        err.print(f"  weights {summary.weights} (sha256 {summary.weights_sha256[:16]}...)")


def print_features_status(storage: Storage, sets: list[ImageSet] | None, console: Console) -> None:
    """`oiv4 status`'s features lines: one per model and set that has a features ledger."""
    from oiv4.stages.features.status import features_status

    for st in features_status(storage, sets):
        line = f"features {st.model} {st.image_set}: {st.vectors:,} vectors, {st.shards_done} shard(s) done"
        if st.shards_running:
            line += f", {st.shards_running} running or interrupted"
        if st.failed:
            line += ", [red]no vector: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.failed.items())) + "[/red]"
        console.print(line, highlight=False)
