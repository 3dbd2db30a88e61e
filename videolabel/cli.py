"""The ``videolabel`` command line: a thin typer shell over the library.

Each command parses its flags, calls one library function and prints. A :class:`VideolabelError`
becomes one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from videolabel.errors import VideolabelError

app = typer.Typer(
    name="videolabel",
    help="Label an unlabelled video collection from scratch, from its pictures and its sound (SeLaVi).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from videolabel import __version__

        typer.echo(f"videolabel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Label an unlabelled video collection from scratch, from its pictures and its sound (SeLaVi)."""


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit with ``code``."""
    typer.echo(f"videolabel: error: {message}", err=True)
    raise typer.Exit(code)


# --- commands -------------------------------------------------------------------------------
# (each command is a small function below; keep parsing and printing here, work in the library)


@app.command()
def ingest(
    src: str = typer.Argument(..., help="Directory of source videos (searched recursively)."),
    out: str = typer.Option(..., "--out", "-o", help="Cache directory to create or complete."),
    glob: str = typer.Option(None, "--glob", help="Only files matching PATTERN (relative path, or file name "
                              "if no '/')."),
    list_file: str = typer.Option(None, "--list", help="File listing the videos, one path a line "
                                   "(relative to SRC or absolute)."),
    clips_per_video: int = typer.Option(3, "--clips-per-video", help="Clips per video, spread evenly over it."),
    frames: int = typer.Option(30, "--frames", help="Frames per clip."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate of the stored clips."),
    size: str = typer.Option("128x171", "--size", help="Stored frame size HxW (scaled to cover, centre-cropped)."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="Audio sample rate (Hz) of the log-mel spectrograms."),
    n_fft: int = typer.Option(2048, "--n-fft", help="Zero-padded FFT size (no mel filter may be empty)."),
    short: str = typer.Option("pad", "--short", help="Video shorter than one clip: pad (repeat last frame) or skip."),
    require_audio: bool = typer.Option(False, "--require-audio", help="Fail videos without an audio stream."),
    workers: int = typer.Option(None, "--workers", help="Decode processes (default: number of CPUs)."),
    shard_size: int = typer.Option(64, "--shard-size", help="Videos per shard."),
    part: str = typer.Option("0/1", "--part", help="Ingest share i of n (i/n) of SRC, for several machines."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Wipe an existing cache first."),
    max_failures: int = typer.Option(None, "--max-failures", help="Exit with code 3 if more videos than this failed."),
    ffmpeg: str = typer.Option(None, "--ffmpeg", help="ffmpeg executable (default: $VIDEOLABEL_FFMPEG, PATH, "
                               "then imageio-ffmpeg)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds allowed for the ffmpeg calls of one video."),
    progress: str = typer.Option("auto", "--progress", help="auto (bar on a terminal), rich, log or none."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but the summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Decode videos into a cache of clips and log-mel spectrograms (resumable, parallel)."""
    import json

    from videolabel.config import IngestConfig
    from videolabel.errors import TooManyFailuresError
    from videolabel.ingest import run_ingest
    from videolabel.ingest.driver import PROGRESS_MODES

    if progress not in PROGRESS_MODES:  # checked even with --quiet, which replaces it
        fail(f"--progress must be one of {', '.join(PROGRESS_MODES)}, not {progress!r}")

    try:
        height, width = (int(x) for x in size.lower().split("x"))
    except ValueError:
        fail(f"--size must look like HxW (e.g. 128x171), not {size!r}")
    config = IngestConfig(
        frames=frames, fps=fps, clips_per_video=clips_per_video, height=height, width=width,
        sample_rate=sample_rate, n_fft=n_fft, short=short, require_audio=require_audio,
    )

    def show(summary) -> None:
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            for line in summary.lines():
                typer.echo(line)

    try:
        summary = run_ingest(
            src, out, config, workers=workers, glob=glob, list_file=list_file, part=part,
            overwrite=overwrite, max_failures=max_failures, ffmpeg=ffmpeg, timeout=timeout,
            shard_size=shard_size, progress="none" if quiet else progress,
        )
    except TooManyFailuresError as exc:
        partial = getattr(exc, "summary", None)
        if partial is not None:
            show(partial)
        raise
    show(summary)


@app.command()
def train(
    cache: Path = typer.Argument(..., help="Cache folder written by `videolabel ingest`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, metrics, checkpoints, labels)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML, TOML or JSON file of settings."),
    preset: Optional[str] = typer.Option(None, help="Model preset: paper (default) or tiny."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of clusters K (default 100)."),
    heads: Optional[int] = typer.Option(None, help="Clustering heads per modality (default 10)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default 200)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Clips per process (default 16)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate per 16-clip batch (default 0.01)."),
    prior: Optional[str] = typer.Option(None, help="Cluster-size prior: uniform, gaussian or a file of K masses."),
    modalities: Optional[str] = typer.Option(None, help="both (default), video, audio, or concat (one head set on "
                                             "both encoders' concatenated features: a baseline)."),
    workers: Optional[int] = typer.Option(None, help="Loader processes per training process (default: up to 4, "
                                          "one CPU fewer than this process may use)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic",
                                                  help="Bit-reproducible (CPU) run."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the encoders."),
    align: Optional[bool] = typer.Option(None, "--align/--no-align", help="Modality alignment before training."),
    decorrelate: Optional[bool] = typer.Option(None, "--decorrelate/--no-decorrelate",
                                                help="Decorrelated heads (two label-pass augmentations)."),
    set_: list[str] = typer.Option([], "--set", help="Any setting as KEY=VALUE (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="labels.csv (path,label): NMI for monitoring only."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch N processes with torchrun on this machine."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    progress: Optional[str] = typer.Option(None, help="auto, rich, log or none."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train SeLaVi on a cache, on one or many GPUs (or CPUs), resumably."""
    if nproc is not None:
        from videolabel.train.launcher import launch

        raise typer.Exit(launch(nproc, sys.argv[1:]))
    from videolabel.train.config import make_config, read_config_file
    from videolabel.train.loop import train as run_train
    from videolabel.train.progress import TrainProgress
    from videolabel.train.signals import EXIT_PREEMPTED

    flags = {
        "preset": preset, "num_clusters": clusters, "num_heads": heads, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "prior": prior, "modalities": modalities, "workers": workers,
        "seed": seed, "deterministic": deterministic, "compile": compile, "align": align,
        "decorrelate": decorrelate, "progress": progress,
    }
    for item in set_:
        if "=" not in item:
            fail(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        flags[key.strip().replace("-", "_")] = value.strip()
    file_values = read_config_file(config) if config else None
    if resume and config is None and (out / "config.json").is_file():
        file_values = read_config_file(out / "config.json")
    if flags.get("workers") is None and (config is None or not file_values or file_values.get("workers") is None):
        from videolabel.data.loader import default_loader_workers

        flags["workers"] = default_loader_workers()  # fit this machine, not the one a resumed run began on
    cfg = make_config(file_values, flags)
    if not cache.is_dir():
        fail(f"cache folder not found: {cache}")
    if gt is not None and not gt.is_file():
        fail(f"ground-truth file not found: {gt}")
    summary = run_train(cache, out, cfg, resume=resume, gt=gt, device=device,
                        progress=TrainProgress("none" if json_out else cfg.progress))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        state = "finished" if summary.finished else "stopped at a signal (resume with --resume)"
        line = (f"train {state}: {summary.steps}/{summary.total_steps} steps, {summary.epochs:.2f} epochs, "
                f"{summary.solves} label solves in {summary.seconds:.1f}s ({summary.clips_per_s:.1f} clips/s, "
                f"data_wait {100 * summary.data_wait:.0f}%)")
        typer.echo(line)
        if summary.nmi_gt is not None:
            typer.echo(f"NMI of head-0 training labels to --gt (monitoring only): {summary.nmi_gt:.3f}")
        typer.echo(f"wrote {summary.checkpoint}")
        if summary.labels:
            typer.echo(f"wrote {summary.labels}")
    if summary.preempted:
        raise typer.Exit(EXIT_PREEMPTED)


@app.command()
def assign(
    run: List[Path] = typer.Argument(..., help="Run folder written by `videolabel train`; several (e.g. seeds): "
                                     "the one whose towers agree most is written."),
    out: Path = typer.Option(..., "--out", "-o", help="Assignments Parquet file to write."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache to label (default: the run's training cache)."),
    method: str = typer.Option("selavi", help="selavi (the trained heads) or kmeans (on pooled encoder features)."),
    random_init: bool = typer.Option(False, "--random-init", help="k-means on a randomly initialised encoder."),
    k: Optional[int] = typer.Option(None, "--k", help="k for --method kmeans (default: the run's K)."),
    pca: int = typer.Option(32, "--pca", help="k-means: PCA-whiten each modality's features to N dims "
                             "first (0: L2 only)."),
    modality: str = typer.Option("both", help="both, audio or visual."),
    head: str = typer.Option("auto", help="Head that fills the top-level `cluster` column: an index, or auto "
                             "(the head whose frames-only and audio-only clusters agree most; head 0 where the run "
                             "has one trained tower)."),
    clips: Optional[int] = typer.Option(None, help="Clips per video to average (default: all cached clips)."),
    degrade: int = typer.Option(1, help="Degrade frames by nearest down/up-sampling by this factor (Fig. 2)."),
    layout: str = typer.Option("wide", help="wide (a row per video) or long (a row per video and head)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Also write pooled features to this Parquet."),
    name: Optional[str] = typer.Option(None, help="Short name shown in comparison tables."),
    batch_size: int = typer.Option(64, "--batch-size", help="Clips per inference batch."),
    workers: Optional[int] = typer.Option(None, help="Loader processes (default: up to 4, one CPU fewer than "
                                          "this process may use)."),
    seed: int = typer.Option(0, help="Seed (k-means)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch N processes with torchrun on this machine."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write the cluster of every video, per head, as Parquet (or k-means baselines)."""
    if nproc is not None:
        from videolabel.train.launcher import launch

        raise typer.Exit(launch(nproc, sys.argv[1:]))
    from videolabel.assign import AssignOptions
    from videolabel.assign import assign as run_assign
    from videolabel.data.loader import default_loader_workers

    if workers is None:
        workers = default_loader_workers()

    opts = AssignOptions(method=method, modality=modality, head=head, clips=clips, degrade=degrade, layout=layout,
                         random_init=random_init, k=k, pca=pca, batch_size=batch_size, workers=workers, seed=seed,
                         features=str(features) if features else None, name=name)
    summary = run_assign(run, out, cache=cache, options=opts, device=device)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
        return
    typer.echo(f"assigned {summary.videos} videos ({summary.clips} clips, {summary.clips_per_s:.1f} clips/s) "
               f"with {summary.method}: {summary.clusters_used} of {summary.num_clusters} clusters used")
    choice = summary.meta.get("run_choice")
    if choice:
        for c in choice["candidates"]:
            mark = "*" if c["run"] == choice["chosen"] else " "
            typer.echo(f"{mark} {c['run']}: head {c['head']} frames-vs-audio NMI {c['head_av_nmi'][c['head']]:.3f}")
        typer.echo(f"chose run {choice['chosen']} (highest audio-visual agreement; * above)")
    scores = summary.meta.get("head_av_nmi")
    if scores:
        how = "chosen by audio-visual agreement" if summary.meta.get("head_choice") == "auto" else "as asked"
        typer.echo(f"cluster = head {summary.meta['head']} ({how}; frames-vs-audio NMI per head: "
                   + ", ".join(f"{x:.2f}" for x in scores) + ")")
    if summary.features:
        typer.echo(f"wrote {summary.features}")
    typer.echo(f"wrote {summary.out}")


@app.command()
def evaluate(
    assignments: list[Path] = typer.Argument(..., help="Assignment Parquet file(s) written by `videolabel assign`."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth: labels.csv (path,label) or Parquet."),
    key: str = typer.Option("path", "--key", help="Join on path or video_id."),
    gt_key: Optional[str] = typer.Option(None, "--gt-key", help="Column of --gt to join on (default: --key)."),
    gt_label: str = typer.Option("label", "--gt-label", help="Column of --gt holding the class."),
    oracle: bool = typer.Option(False, "--oracle", help="Also report the best head by NMI (peeks at the labels)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (object, or list for several files)."),
    show_unmatched: int = typer.Option(5, "--show-unmatched", help="Examples of unmatched keys to list (0: none)."),
    simulate_budget: Optional[str] = typer.Option(None, "--simulate-budget",
                                                  help="Seeds per cluster to simulate, e.g. 1,2,5: accuracy of "
                                                       "labels propagated from that many ground-truth labels."),
) -> None:
    """Score assignments against ground truth: NMI, ARI, Acc, <H>, <p_max> per head; compare files."""
    from videolabel.evaluate import evaluate_paths, render_table, summary_lines

    if key not in ("path", "video_id"):
        fail(f"--key must be path or video_id, got {key!r}")
    reports = evaluate_paths(assignments, gt, key=key, gt_key=gt_key, gt_label=gt_label, oracle=oracle,
                             max_examples=max(show_unmatched, 0))
    budget_rows = None
    if simulate_budget is not None:
        from videolabel.propagate import simulate_budget_paths

        budget_rows = simulate_budget_paths(assignments, gt, simulate_budget, key=key, gt_key=gt_key,
                                            gt_label=gt_label)
    if json_out:
        docs = [r.to_dict() for r in reports]
        if budget_rows is not None:
            for d, rows in zip(docs, budget_rows):
                d["budget"] = rows
        typer.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, allow_nan=False))
        return
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)
    console.print(render_table(reports))
    for line in summary_lines(reports, show_unmatched=max(show_unmatched, 0)):
        typer.echo(line)
    if budget_rows is not None:
        from videolabel.propagate import budget_table

        for r, rows in zip(reports, budget_rows):
            console.print(budget_table(rows, title=f"{r.name}: label budget simulation" if len(reports) > 1 else None))


@app.command()
def select(
    assignments: Path = typer.Argument(..., help="Assignment Parquet file written by `videolabel assign`."),
    per_cluster: int = typer.Option(..., "--per-cluster", help="Most representative videos per cluster."),
    uncertain: int = typer.Option(0, "--uncertain", help="Also the M most uncertain videos overall (lowest margin)."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV to write (path, video_id, cluster, confidence, "
                              "reason, label)."),
) -> None:
    """Pick the videos a human should label: the most confident per cluster, plus the most uncertain."""
    from videolabel.assignments import load_assignments
    from videolabel.propagate import select_for_labelling, write_selection

    sel = select_for_labelling(load_assignments(assignments).df, per_cluster, uncertain)
    write_selection(sel, out)
    n_unc = int((sel["reason"] == "uncertain").sum())
    typer.echo(f"selected {len(sel)} videos ({len(sel) - n_unc} representative, {n_unc} uncertain) "
               f"from {sel['cluster'].nunique()} clusters; fill in the label column")
    typer.echo(f"wrote {out}")


@app.command()
def propagate(
    assignments: Path = typer.Argument(..., help="Assignment Parquet file written by `videolabel assign`."),
    seeds: Path = typer.Option(..., "--seeds", help="CSV of human labels: path,label or video_id,label."),
    features: Optional[Path] = typer.Option(None, "--features", help="Features Parquet (`assign --features`) "
                                            "for the nearest-neighbour fallback."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", help="Abstain below this confidence."),
    out: Path = typer.Option(..., "--out", "-o", help="Labels Parquet to write."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Label every video from a few human labels: cluster majority, else nearest labelled neighbours."""
    from videolabel.assignments import load_assignments
    from videolabel.propagate import load_features, propagate_labels, read_seeds, write_labels

    a = load_assignments(assignments)
    seeds_df = read_seeds(seeds)
    feats = load_features(features) if features is not None else None
    labels = propagate_labels(a.df, seeds_df, features=feats, min_confidence=min_confidence)
    write_labels(labels, out)
    counts = {s: int((labels["source"] == s).sum()) for s in ("seed", "cluster", "neighbour", "abstain")}
    if json_out:
        typer.echo(json.dumps({"videos": len(labels), **counts, "out": str(out)}, indent=2))
        return
    typer.echo(f"labelled {len(labels) - counts['abstain']} of {len(labels)} videos: " +
               ", ".join(f"{v} {k}" for k, v in counts.items()))
    typer.echo(f"wrote {out}")


@app.command()
def export(
    assignments: Path = typer.Argument(..., help="Assignment Parquet file written by `videolabel assign`."),
    source_root: Path = typer.Option(..., "--source-root", help="Folder the assignments' paths are relative to."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to fill with cluster_NNN/ folders."),
    copy: bool = typer.Option(False, "--copy", help="Copy the videos instead of symlinking them."),
    head: Optional[int] = typer.Option(None, "--head", help="Use head N's clusters (default: the cluster column)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Features Parquet (`assign --features`)."),
    features_csv: Optional[Path] = typer.Option(None, "--features-csv", help="Write video_id, path, cluster, f0..fD."),
    fiftyone: Optional[str] = typer.Option(None, "--fiftyone", help="Also create a FiftyOne dataset NAME."),
) -> None:
    """Browse clusters: a folder per cluster of symlinks (or copies), a features CSV, FiftyOne."""
    from videolabel.assignments import load_assignments
    from videolabel.export import export_fiftyone, export_tree, write_features_csv

    if (features is None) != (features_csv is None):
        fail("--features and --features-csv go together")
    if out is None and features_csv is None and fiftyone is None:
        fail("nothing to do: give --out, --features-csv or --fiftyone")
    a = load_assignments(assignments)
    if fiftyone is not None:
        n = export_fiftyone(a.df, source_root, fiftyone, head=head)
        typer.echo(f"FiftyOne dataset {fiftyone!r}: {n} videos")
    if out is not None:
        for line in export_tree(a.df, source_root, out, copy=copy, head=head).lines():
            typer.echo(line)
    if features_csv is not None and features is not None:  # given together (checked above)
        from videolabel.propagate import load_features

        write_features_csv(a.df, load_features(features), features_csv, head=head)
        typer.echo(f"wrote {features_csv}")


@app.command()
def report(
    assignments: Path = typer.Argument(..., help="Assignment Parquet file written by `videolabel assign`."),
    cache: Path = typer.Option(..., "--cache", help="Cache the assignments label (frames and spectrograms "
                              "come from it)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the static site (index.html) into."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="labels.csv (path,label): majority label, purity, entropy."),
    per_cluster: int = typer.Option(24, "--per-cluster", help="Videos shown per cluster page (2/3 exemplars, "
                                     "1/3 outliers)."),
    head: Optional[int] = typer.Option(None, "--head", help="Use head N's clusters (default: the cluster column)."),
    source_root: Optional[Path] = typer.Option(None, "--source-root",
                                               help="Folder of the source videos: adds playable audio of each clip."),
    ffmpeg: Optional[str] = typer.Option(None, "--ffmpeg", help="ffmpeg executable (for the audio; "
                                          "default: as ingest)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Features Parquet (`assign --features`): "
                                            "draws a map of the collection (2-D PCA, coloured by cluster)."),
    strip: int = typer.Option(6, "--strip", help="Thumbnails per cluster row of the index (its most confident)."),
) -> None:
    """Static HTML report of the clusters (thumbnail grids, spectrograms, audio, a map, a naming form); opens from file://."""
    from videolabel.report import build_report

    index = build_report(assignments, cache, out, gt=gt, per_cluster=per_cluster, head=head,
                         source_root=source_root, ffmpeg=ffmpeg, features=features, strip=strip)
    typer.echo(f"wrote {index}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except VideolabelError as exc:
        typer.echo(f"videolabel: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("videolabel: interrupted", err=True)
        sys.exit(130)
