"""``videolabel evaluate``, ``select`` and ``propagate``: score assignments, pick videos to label, propagate labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videolabel.cli.app import app, fail


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
        from videolabel.budget import simulate_budget_paths

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
        from videolabel.budget import budget_table

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
    from videolabel.features import load_features
    from videolabel.propagate import propagate_labels, read_seeds, write_labels

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
