"""``videolabel export`` and ``report``: browse the clusters (folders, CSV, FiftyOne, a static site)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from videolabel.cli.app import app, fail


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
        from videolabel.features import load_features

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
