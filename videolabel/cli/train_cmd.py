"""``videolabel train``: a cache -> a run folder (checkpoints, labels)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from videolabel.cli.app import app, fail
from videolabel.errors import VideolabelError
from videolabel.train.config import MODALITIES, PRIORS, TrainConfig
from videolabel.train.progress import PROGRESS_MODES

_T = TrainConfig  # the paper's defaults (the tiny preset's recipe changes some: train.config.PRESET_DEFAULTS)


@app.command()
def train(
    cache: Path = typer.Argument(..., help="Cache folder written by `videolabel ingest`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, metrics, checkpoints, labels)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML, TOML or JSON file of settings."),
    preset: Optional[str] = typer.Option(None, help=f"Model preset: {_T.preset} (default) or tiny."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k",
                                           help=f"Number of clusters K (default {_T.num_clusters})."),
    heads: Optional[int] = typer.Option(None, help=f"Clustering heads per modality (default {_T.num_heads})."),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs (default {_T.epochs})."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size",
                                             help=f"Clips per process (default {_T.batch_size})."),
    lr: Optional[float] = typer.Option(None, help=f"Learning rate per 16-clip batch (default {_T.lr})."),
    prior: Optional[str] = typer.Option(None, help=f"Cluster-size prior: {', '.join(PRIORS)} or a file of K masses."),
    modalities: Optional[str] = typer.Option(None, help=f"{_T.modalities} (default), "
                                             f"{', '.join(m for m in MODALITIES[:-1] if m != _T.modalities)}, or "
                                             f"{MODALITIES[-1]} (one head set on both encoders' concatenated "
                                             "features: a baseline)."),
    workers: Optional[int] = typer.Option(None, help="Loader processes per training process (default: up to 4, "
                                          "one CPU fewer than this process may use)."),
    seed: Optional[int] = typer.Option(None, help=f"Random seed (default {_T.seed})."),
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
    progress: Optional[str] = typer.Option(None, help=f"{', '.join(PROGRESS_MODES[:-1])} or {PROGRESS_MODES[-1]}."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train SeLaVi on a cache, on one or many GPUs (or CPUs), resumably."""
    if nproc is not None:
        from videolabel.train.launcher import launch

        raise typer.Exit(launch(nproc, sys.argv[1:]))
    from videolabel.train.config import as_saved, make_config, parse_settings, read_config_file
    from videolabel.train.loop import train as run_train
    from videolabel.train.progress import TrainProgress
    from videolabel.train.signals import EXIT_PREEMPTED

    flags = {
        "preset": preset, "num_clusters": clusters, "num_heads": heads, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "prior": prior, "modalities": modalities, "workers": workers,
        "seed": seed, "deterministic": deterministic, "compile": compile, "align": align,
        "decorrelate": decorrelate, "progress": progress,
    }
    try:
        flags.update(parse_settings(set_))
    except VideolabelError as exc:
        fail(str(exc))
    file_values = read_config_file(config) if config else None
    if resume and config is None and (out / "config.json").is_file():
        file_values = as_saved(read_config_file(out / "config.json"))  # settings added since: as the run had them
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
