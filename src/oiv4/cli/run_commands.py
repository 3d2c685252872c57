"""Commands that run everything (build, demo) and the offline mirror."""

from __future__ import annotations

import typer

from oiv4.cli import render
from oiv4.cli.app import app, make_console
from oiv4.cli.app import console as err
from oiv4.cli.demo import DemoSettings
from oiv4.cli.guard import report_target, writing
from oiv4.cli.logs import LogSettings, emit_summary
from oiv4.cli.options import settings_command
from oiv4.cli.stage_commands import fetch_exit_code
from oiv4.contracts.errors import COMPLETE_WITH_FAILURES, SettingError, UsageError
from oiv4.io.storage import Storage
from oiv4.report import ReportSettings
from oiv4.run.build import BuildResult, BuildSettings

RUN_PANEL = "Run everything"

#: `oiv4 build` carries every stage's options. Each downloading stage has its own transfer settings (with
#: their own defaults), so their flags carry the stage: `--metadata-attempts`, `--archives-attempts`,
#: `--fetch-attempts` (one `--allow-private-networks` / `--ca-bundle` is shared by all).
BUILD_PREFIXES = {
    "settings.metadata.transfer": "--metadata-",
    "settings.archives.transfer": "--archives-",
    "settings.fetch.transfer": "--fetch-",
}
#: The other flags two stages would both claim, spelled for `oiv4 build`.
BUILD_RENAMES = {
    "settings.metadata.base_url": "--metadata-url",
    "settings.metadata.force": "--metadata-force/--no-metadata-force",
    "settings.plan.force": "--plan-force/--no-plan-force",
    "settings.archives.source": "--archives-source",
    "settings.archives.force_settings": "--archives-force-settings/--no-archives-force-settings",
    "settings.fetch.force_settings": "--fetch-force-settings/--no-fetch-force-settings",
    "settings.verification.workers": "--verify-workers",
    "settings.verification.fast": "--verify-fast",
    "reporting.out": "--report-out",
    "reporting.samples": "--report-samples",
}


def _finish(result: BuildResult, log: LogSettings, failures_code: bool = True) -> None:
    from oiv4.cli.status_view import status_view
    from oiv4.stages.status import collect_status

    as_json = emit_summary("build", result, log)
    render.build_finish(result, status_view(collect_status(Storage(result.root))), to_stderr=as_json)
    if not result.ok:
        raise typer.Exit(1)
    if not failures_code:  # the demo's mirror misbehaves on purpose: its failures are the demo, exit 0
        return
    if result.fetch:
        code = fetch_exit_code(list(result.fetch.values()))
        if code:
            raise typer.Exit(code)
    if any(o != "ok" and n for s in result.archives.values() for o, n in s.outcomes.items()):
        raise typer.Exit(COMPLETE_WITH_FAILURES)


@app.command("build", rich_help_panel=RUN_PANEL)
@settings_command(
    {"settings": BuildSettings, "reporting": ReportSettings, "log": LogSettings},
    rename=BUILD_RENAMES,
    prefix=BUILD_PREFIXES,
)
def build_cmd(
    settings: BuildSettings,
    reporting: ReportSettings,
    log: LogSettings,
    root: str = typer.Option(
        ..., "--root", "-r", help="Where the sets are built: a folder, or an fsspec URL such as s3://bucket/prefix."
    ),
) -> None:
    """Every stage in order: metadata, plan, archives (targets, validation), fetch (train, extended_targets), verify, report.

    Idempotent: each stage skips what is already done, so after an interruption just run it again.
    Every option of the stage commands is here too; where two stages share a name, the stage prefixes it
    (e.g. --metadata-attempts, --fetch-attempts, --archives-attempts).

    Example: oiv4 build --root /data/open_images
    """
    from oiv4.report import build_report
    from oiv4.run.build import run_build

    if reporting.out is not None:
        report_target(reporting.out)
    with writing(root, "oiv4 build") as storage:
        result = run_build(storage, settings, render.BuildView(log), lambda s: build_report(s, reporting))
    _finish(result, log)


@app.command("demo", rich_help_panel=RUN_PANEL)
@settings_command({"settings": DemoSettings, "log": LogSettings})
def demo_cmd(settings: DemoSettings, log: LogSettings) -> None:
    """The whole pipeline, offline: start a generated OpenImages mirror on 127.0.0.1 and build all four sets from it.

    The mirror serves both CSVs, Flickr-like originals (some misbehaving: 403/404/410, 429/503, redirects to the
    'photo unavailable' card, cut bodies, slow trickles, bombs) and CVDF-layout archives. Re-running resumes.

    Example: oiv4 demo --root ./demo-data
    """
    from oiv4.cli.demo import run_demo

    with writing(settings.root, "oiv4 demo"):
        err.print(
            f"[bold]oiv4 demo[/bold]: generating a {settings.images:,}-image universe (cached after the first run) ..."
        )
        result = run_demo(settings, render.BuildView(log))
    _finish(result, log, failures_code=False)
    make_console(stderr=log.json or log.log_format == "json").print(
        f"\nNext: open the data in Python with [bold]import oiv4; ds = oiv4.open({settings.root!r})[/bold], "
        f"run [bold]oiv4 verify --root {settings.root} --deep[/bold], or look at the report above."
    )


def mirror_next_commands(base_url: str, root: str = "./data") -> list[str]:
    """The commands that build from a mirror at `base_url` into `root`, as `oiv4 mirror` prints them
    (and README's offline section and the mirror's --help show them for port 8000)."""
    network = "--allow-private-networks"
    return [
        f"oiv4 metadata --root {root} --base-url {base_url}/openimages/2018_04/ {network}",
        f"oiv4 plan --root {root}",
        f"oiv4 archives targets --root {root} --source {base_url}/tar/ {network}",
        f"oiv4 archives validation --root {root} --source {base_url}/tar/ {network}",
        f"oiv4 fetch train --root {root} {network}",
        f"oiv4 status --root {root}",
    ]


@app.command("mirror", rich_help_panel="Offline and testing")
def mirror_cmd(
    seed: int = typer.Option(0, min=0, help="Seed of the universe: the same seed always gives the same bytes."),
    images: int = typer.Option(300, min=1, help="Rows in image_ids_and_rotation.csv (train, validation and test)."),
    megapixels: tuple[float, float] = typer.Option((0.5, 2.0), help="Range of the originals' sizes, MIN MAX."),
    misbehaviour_fraction: float = typer.Option(
        0.15,
        min=0.0,
        max=1.0,
        help="Share of URL-set rows that misbehave like Flickr (403/404/410/429/503/500, redirects, ...).",
    ),
    latency_ms: float = typer.Option(0.0, min=0.0, help="Delay before every image answer, to simulate a distant host."),
    bandwidth_mbps: float = typer.Option(
        0.0, min=0.0, help="Per-response bandwidth cap for images in MB/s (0 = none)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    cache_dir: str = typer.Option(
        None,
        help="Where generated bytes are cached; regenerable, up to ~0.7 MB per image (make demo's: 2.2 GB), "
        "`make clean` removes it [default: ${OIV4_MIRROR_CACHE:-$TMPDIR or /tmp}/oiv4-mirror-<hash>].",
    ),
    workers: int = typer.Option(None, min=1, help="Threads that render images [default: CPU count]."),
) -> None:
    """Serve a generated, deterministic mini OpenImages V4 over HTTP until Ctrl-C (no internet needed).

    Serves both metadata CSVs (12 real columns, Flickr-like OriginalURLs pointing at the mirror), the
    originals (JPEG/PNG/GIF/CMYK/16-bit, some rotated), a share of them misbehaving like Flickr does,
    and the CVDF archives tar/train_<x>.tar.gz and tar/validation.tar.gz. Everything is generated
    (and cached on disk) before serving starts.

    Once serving, it prints the commands that build from it; 127.0.0.1 is a private address, so each
    stage that downloads needs --allow-private-networks.

    Example: oiv4 mirror --images 3000 --port 8000
    then, in another terminal:
      oiv4 metadata --root ./data --base-url http://127.0.0.1:8000/openimages/2018_04/ --allow-private-networks
      oiv4 plan --root ./data
      oiv4 archives targets --root ./data --source http://127.0.0.1:8000/tar/ --allow-private-networks
      oiv4 archives validation --root ./data --source http://127.0.0.1:8000/tar/ --allow-private-networks
      oiv4 fetch train --root ./data --allow-private-networks
      oiv4 status --root ./data
    """
    from oiv4.contracts.errors import SourceError
    from oiv4_mirror.server import serve_forever, stderr_progress
    from oiv4_mirror.universe import Universe, UniverseSpec

    if not 0 < megapixels[0] <= megapixels[1]:
        raise UsageError(f"--megapixels must be MIN MAX with 0 < MIN <= MAX, got {megapixels[0]:g} {megapixels[1]:g}")
    try:
        spec = UniverseSpec(
            seed=seed,
            n_images=images,
            megapixels=megapixels,
            misbehaviour_fraction=misbehaviour_fraction,
            latency_seconds=latency_ms / 1000,
            bytes_per_second=bandwidth_mbps * 1e6,
        )
    except SettingError as exc:
        raise UsageError(f"bad universe: {exc}") from None
    universe = Universe(spec, cache_dir)
    err.print(f"generating {images:,} images ({megapixels[0]}-{megapixels[1]} MP) in {universe.cache_dir} ...")

    def ready(base_url: str) -> None:
        counts = {role: sum(1 for i in universe.images if i.role == role) for role in ("targets", "url", "validation")}
        out = make_console(highlight=False, soft_wrap=True)  # soft wrap: commands stay one line each, to copy
        out.print(
            f"mirror serving at {base_url}; Ctrl-C to stop\n"
            f"  metadata base URL: {base_url}/openimages/2018_04/\n"
            f"  archives base URL: {base_url}/tar/\n"
            f"  rows: {images:,} (targets {counts['targets']:,}, URL sets {counts['url']:,}, "
            f"validation {counts['validation']:,})\n"
            "build from it in another terminal (127.0.0.1 is refused without --allow-private-networks):",
            markup=False,
        )
        for line in mirror_next_commands(base_url):
            out.print("  " + line, markup=False)

    try:
        serve_forever(universe, host=host, port=port, workers=workers, on_ready=ready, progress=stderr_progress())
    except OSError as exc:
        # The mirror *is* the source here: failing to serve is a source problem for whoever waits on it.
        raise SourceError(f"cannot serve on {host}:{port}: {exc}") from None
