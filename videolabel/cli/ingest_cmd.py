"""``videolabel ingest``: source videos -> a cache of clips and spectrograms."""

from __future__ import annotations

import typer

from videolabel.cli.app import app, fail
from videolabel.config import IngestConfig
from videolabel.train.progress import PROGRESS_MODES

_D = IngestConfig  # the defaults of every setting of the cache


@app.command()
def ingest(
    src: str = typer.Argument(..., help="Directory of source videos (searched recursively)."),
    out: str = typer.Option(..., "--out", "-o", help="Cache directory to create or complete."),
    glob: str = typer.Option(None, "--glob", help="Only files matching PATTERN (relative path, or file name "
                              "if no '/')."),
    list_file: str = typer.Option(None, "--list", help="File listing the videos, one path a line "
                                   "(relative to SRC or absolute)."),
    clips_per_video: int = typer.Option(_D.clips_per_video, "--clips-per-video",
                                        help="Clips per video, spread evenly over it."),
    frames: int = typer.Option(_D.frames, "--frames", help="Frames per clip."),
    fps: float = typer.Option(_D.fps, "--fps", help="Frame rate of the stored clips."),
    size: str = typer.Option(f"{_D.height}x{_D.width}", "--size",
                             help="Stored frame size HxW (see --fit)."),
    fit: str = typer.Option(_D.fit, "--fit", help="A frame of another aspect than --size: cover (scaled to cover "
                            "it, centre-cropped: a portrait video on a landscape size loses its top and bottom) "
                            "or contain (scaled to fit inside, centred on black: nothing cut away)."),
    sample_rate: int = typer.Option(_D.sample_rate, "--sample-rate",
                                    help="Audio sample rate (Hz) of the log-mel spectrograms."),
    n_fft: int = typer.Option(_D.n_fft, "--n-fft", help="Zero-padded FFT size (no mel filter may be empty)."),
    short: str = typer.Option(_D.short, "--short",
                              help="Video shorter than one clip: pad (repeat last frame) or skip."),
    require_audio: bool = typer.Option(_D.require_audio, "--require-audio",
                                       help="Fail videos without an audio stream."),
    workers: int = typer.Option(None, "--workers", help="Decode processes (default: number of CPUs)."),
    shard_size: int = typer.Option(64, "--shard-size", help="Videos per shard."),
    part: str = typer.Option("0/1", "--part", help="Ingest share i of n (i/n) of SRC, for several machines."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Wipe an existing cache first."),
    max_failures: int = typer.Option(None, "--max-failures", help="Exit with code 3 if more videos than this failed."),
    ffmpeg: str = typer.Option(None, "--ffmpeg", help="ffmpeg executable (default: $VIDEOLABEL_FFMPEG, PATH, "
                               "then imageio-ffmpeg)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds allowed for the ffmpeg calls of one video."),
    progress: str = typer.Option(PROGRESS_MODES[0], "--progress", help=f"{PROGRESS_MODES[0]} (bar on a terminal), "
                                  f"{', '.join(PROGRESS_MODES[1:-1])} or {PROGRESS_MODES[-1]}."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but the summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Decode videos into a cache of clips and log-mel spectrograms (resumable, parallel)."""
    import json

    from videolabel.errors import TooManyFailuresError
    from videolabel.ingest import run_ingest

    if progress not in PROGRESS_MODES:  # checked even with --quiet, which replaces it
        fail(f"--progress must be one of {', '.join(PROGRESS_MODES)}, not {progress!r}")

    try:
        height, width = (int(x) for x in size.lower().split("x"))
    except ValueError:
        fail(f"--size must look like HxW (e.g. 128x171), not {size!r}")
    config = IngestConfig(
        frames=frames, fps=fps, clips_per_video=clips_per_video, height=height, width=width,
        sample_rate=sample_rate, n_fft=n_fft, short=short, require_audio=require_audio, fit=fit,
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
