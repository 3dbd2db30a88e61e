"""``videolabel assign``: run folder(s) -> the assignments Parquet."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from videolabel.assign_options import MODALITIES, AssignOptions
from videolabel.cli.app import app

_A = AssignOptions  # the defaults of `videolabel assign`


@app.command()
def assign(
    run: List[Path] = typer.Argument(..., help="Run folder written by `videolabel train`; several (e.g. seeds): "
                                     "the one whose towers agree most is written."),
    out: Path = typer.Option(..., "--out", "-o", help="Assignments Parquet file to write."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache to label (default: the run's training cache)."),
    method: str = typer.Option(_A.method, help="selavi (the trained heads) or kmeans (on pooled encoder features)."),
    random_init: bool = typer.Option(_A.random_init, "--random-init",
                                     help="k-means on a randomly initialised encoder."),
    k: Optional[str] = typer.Option(None, "--k", help="k for --method kmeans (default: the run's K), or auto: "
                                    "the K (2-64) whose clusters the frames and the sound agree on most."),
    space: str = typer.Option(_A.space, "--space", help="k-means: joint (each modality's whitened features) or "
                              "shared (only what the frames and the sound vary in together: canonical correlation "
                              "analysis)."),
    pca: Optional[int] = typer.Option(None, "--pca", help="k-means: PCA-whiten each modality's features to N dims "
                                      "first (0: L2 only; default 32, 64 with --space shared)."),
    modality: str = typer.Option(_A.modality,
                                 help=f"{', '.join(MODALITIES[:-1])} or {MODALITIES[-1]}."),
    head: str = typer.Option(str(_A.head), help="Head that fills the top-level `cluster` column: an index, "
                             "agreement (the head whose frames-only and audio-only clusters agree most; head 0 where "
                             "the run has one trained tower), consensus (the head whose clusters agree most with the "
                             "other heads'), objective (the head whose clusters have the lowest k-means objective in "
                             "the run's final space) or auto: objective where the heads hold k-means restarts of the "
                             "final features (the tiny preset), agreement where they were trained on self-labels "
                             "(paper)."),
    clips: Optional[int] = typer.Option(_A.clips, help="Clips per video to average (default: all cached clips)."),
    degrade: int = typer.Option(_A.degrade, help="Degrade frames by nearest down/up-sampling by this factor (Fig. 2)."),
    layout: str = typer.Option(_A.layout, help="wide (a row per video) or long (a row per video and head)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Also write pooled features to this Parquet."),
    name: Optional[str] = typer.Option(_A.name, help="Short name shown in comparison tables."),
    batch_size: int = typer.Option(_A.batch_size, "--batch-size", help="Clips per inference batch."),
    workers: Optional[int] = typer.Option(None, help="Loader processes (default: up to 4, one CPU fewer than "
                                          "this process may use)."),
    seed: int = typer.Option(_A.seed, help="Seed (k-means)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch N processes with torchrun on this machine."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write the cluster of every video, per head, as Parquet (or k-means baselines)."""
    if nproc is not None:
        from videolabel.train.launcher import launch

        raise typer.Exit(launch(nproc, sys.argv[1:]))
    from videolabel.assign import assign as run_assign
    from videolabel.data.loader import default_loader_workers

    if workers is None:
        workers = default_loader_workers()

    opts = AssignOptions(method=method, modality=modality, head=head, clips=clips, degrade=degrade, layout=layout,
                         random_init=random_init, k=k, space=space, pca=pca, batch_size=batch_size, workers=workers,
                         seed=seed, features=str(features) if features else None, name=name)
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
    k_scores = summary.meta.get("k_scores")
    if k_scores:
        typer.echo("k auto: frames-vs-sound information (nats) per K: "
                   + ", ".join(f"{kk}: {v:.3f}" for kk, v in k_scores.items())
                   + f"; chose K = {summary.num_clusters}")
    scores = summary.meta.get("head_av_nmi")
    consensus = summary.meta.get("head_consensus_nmi")
    objective = summary.meta.get("head_objective")
    if objective:
        typer.echo(f"cluster = head {summary.meta['head']} (chosen by the lowest k-means objective in the run's "
                   "final space; per head: " + ", ".join(f"{x:.1f}" for x in objective) + ")")
        weights, seen = summary.meta.get("stream_weights"), summary.meta.get("stream_seen")
        if weights and seen:  # the run weighs its streams (stream_weights=auto)
            typer.echo(f"  streams weighted: frames {weights[0]:.2f}, sound {weights[1]:.2f} (of the frames' own "
                       f"clusters the sound predicts {seen[0]:.2f} NMI, of the sound's the frames {seen[1]:.2f})")
    elif consensus:
        typer.echo(f"cluster = head {summary.meta['head']} (chosen by consensus; mean NMI to the other heads per "
                   "head: " + ", ".join(f"{x:.2f}" for x in consensus) + ")")
    elif scores:
        how = "chosen by audio-visual agreement" if summary.meta.get("head_choice") == "agreement" else "as asked"
        typer.echo(f"cluster = head {summary.meta['head']} ({how}; frames-vs-audio NMI per head: "
                   + ", ".join(f"{x:.2f}" for x in scores) + ")")
    sound = summary.meta.get("sound")
    if sound and summary.method == "selavi":
        typer.echo(f"sound: {sound['flagged']} video(s) to review (sound_flag: silent, or av_mismatch >= 0.5), "
                   f"{sound['silent']} of them silent (loudest frame below {sound['silence_db']:g} dBFS); "
                   f"{sound['no_audio']} without an audio track")
    elif sound:  # k-means: no towers to compare, the flag is silence alone
        typer.echo(f"sound: {sound['silent']} video(s) silent (loudest frame below {sound['silence_db']:g} dBFS, "
                   f"sound_flag); {sound['no_audio']} without an audio track")
    if sound and "floors_raised" in sound:  # the run levels the sound (audio_level=video)
        typer.echo(f"sound levelled (audio_level=video): gain {sound['level_gain_db']:+.1f} dB for the collection; "
                   f"{sound['floors_raised']} video(s) over a loud background had their floor raised (floor_raised)")
        if sound.get("level_source") == "measured":
            typer.echo("  the sound's levels were measured now, two passes over the cache's sound (0.6-2 ms per clip, "
                       "at every run and assign): the cache was ingested before ingest stored them; ingest it "
                       "again with --overwrite to store them")
    if summary.features:
        typer.echo(f"wrote {summary.features}")
    typer.echo(f"wrote {summary.out}")
