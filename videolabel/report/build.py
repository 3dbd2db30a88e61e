"""Build the static cluster report: ``index.html`` plus one ``cluster_NNN.html`` per cluster.

Self-contained: plain HTML, inline CSS, inline SVG and a little inline vanilla JS (column sorting,
the thumbnail viewer, the naming form), media files under ``media/``; no network, works from
``file://``. Everything shown that comes from file names, paths or labels is HTML-escaped (and
JSON-escaped inside scripts); media file names are derived from ``video_id`` only.

The index has one row per cluster: a strip of its most confident thumbnails (the middle frame of
each video's first clip), its size as a bar, and these columns:

* size, mean confidence (of the report's head), audio-visual agreement (fraction of the cluster's
  videos with ``av_agree`` true, among those where it is known);
* inter-head stability: for every *other* head h, the cluster's members are mostly sent to one
  cluster of head h (their majority); stability is the fraction of (video, other head) pairs where
  the video is in that majority, i.e. how often the other heads keep the cluster together
  (1.0: every head groups it identically; "—" with a single head);
* with ground truth: majority label, purity (its share of the labelled members) and the entropy
  (nats) of the labels inside the cluster;
* a name field: the naming form under the table downloads ``seeds.csv`` (``video_id,path,cluster,
  label``; one row per exemplar of each named cluster, i.e. the videos shown first on its page),
  which ``videolabel propagate --seeds`` reads.

With ``features`` (the Parquet of ``videolabel assign --features``) the index also draws a map of
the collection: a 2-D PCA of the pooled features (:mod:`videolabel.report.projection`), coloured by
cluster, and by ground-truth label beside it when ``gt`` is given; a point links to its cluster's page.

Each cluster page is a grid of thumbnails (exemplars, then outliers apart), each with its
confidence; hovering over or clicking one shows its frame strip, spectrogram and sound in the viewer.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from videolabel.errors import VideolabelError
from videolabel.groundtruth import source_file
from videolabel.report import media as M
from videolabel.report.pages import cluster_file, cluster_page, index_page, map_section


@dataclass
class _Item:
    row: int  # position in the frame
    kind: str  # "exemplar" or "outlier"


def _stability(sub: pd.DataFrame, other_cols: list[str]) -> float:
    if not other_cols or len(sub) == 0:
        return float("nan")
    hits = 0
    for col in other_cols:
        vals = sub[col].to_numpy()
        _, counts = np.unique(vals, return_counts=True)
        hits += int(counts.max())
    return hits / (len(sub) * len(other_cols))


def _gt_stats(labels: pd.Series) -> tuple[str | None, float, float]:
    lab = labels.dropna().astype(str)
    if lab.empty:
        return None, float("nan"), float("nan")
    counts = lab.value_counts()
    p = counts.to_numpy(np.float64) / counts.sum()
    return str(counts.index[0]), float(p[0]), abs(float(-(p * np.log(p)).sum()))


def build_report(assignments_path: str | Path, cache: str | Path, out: str | Path, *, gt: str | Path | None = None,
                 per_cluster: int = 24, head: int | None = None, source_root: str | Path | None = None,
                 ffmpeg: str | None = None, features: str | Path | None = None, strip: int = 6) -> Path:
    """Write the report folder ``out`` and return the path of its ``index.html``.

    ``features``: the Parquet written by ``videolabel assign --features`` (draws the map);
    ``strip``: thumbnails per cluster row of the index (its most confident videos)."""
    from videolabel.assignments import load_assignments
    from videolabel.data.dataset import ShardDataset
    from videolabel.ingest.shards import CLIPS_SUFFIX, SHARDS

    if per_cluster < 1:
        raise VideolabelError("--per-cluster must be >= 1")
    if strip < 0:
        raise VideolabelError("--strip must be >= 0")
    a = load_assignments(assignments_path)
    feats = None
    if features is not None:
        from videolabel.features import load_features

        feats = load_features(features)
    ds = ShardDataset(cache)
    root = Path(source_root) if source_root is not None else None
    if root is not None and not root.is_dir():
        raise VideolabelError(f"source root is not a folder: {root}")
    df = a.df.reset_index(drop=True).copy()

    # the clustering shown, and its confidence
    if head is None:
        ccol = "cluster"
        shown_head = a.chosen_head if f"cluster_h{a.chosen_head}" in df.columns else None
        conf = df["confidence"] if "confidence" in df.columns else (
            df[f"prob_h{shown_head}"] if shown_head is not None and f"prob_h{shown_head}" in df.columns else None)
    else:
        if head not in a.heads:
            raise VideolabelError(f"--head {head}: no such head (heads: {', '.join(map(str, a.heads))})")
        ccol, shown_head = f"cluster_h{head}", head
        conf = df[f"prob_h{head}"] if f"prob_h{head}" in df.columns else (
            df["confidence"] if "confidence" in df.columns and head == a.chosen_head else None)
    df["_cluster"] = pd.to_numeric(df[ccol], errors="raise").astype(np.int64)
    df["_conf"] = pd.to_numeric(conf, errors="coerce").astype(np.float64) if conf is not None else np.nan
    other_cols = [f"cluster_h{h}" for h in a.heads if h != shown_head and f"cluster_h{h}" in df.columns]

    # join to the cache: by video_id when the file has it, else by path
    vids = ds.videos
    if "video_id" in df.columns:
        pos = pd.Series(np.arange(len(vids)), index=vids["video_id"].astype(str).to_numpy())
        df["_vi"] = df["video_id"].astype(str).map(pos)
    else:
        pos = pd.Series(np.arange(len(vids)), index=vids["path"].astype(str).to_numpy())
        df["_vi"] = df["path"].astype(str).map(pos)
    if df["_vi"].isna().all():
        raise VideolabelError(f"no video of the assignments is in the cache {cache} (wrong --cache?)")
    if "video_id" not in df.columns:
        df["video_id"] = [str(vids["video_id"].iloc[int(i)]) if pd.notna(i) else f"row{k}"
                          for k, i in enumerate(df["_vi"])]
    if "path" not in df.columns:
        df["path"] = [str(vids["path"].iloc[int(i)]) if pd.notna(i) else "" for i in df["_vi"]]

    if gt is not None:
        from videolabel.groundtruth import join_ground_truth, read_ground_truth

        g = read_ground_truth(gt)
        df["_gt"], _ = join_ground_truth(df["path"].astype(str), g)
    else:
        df["_gt"] = pd.NA

    outdir = Path(out)
    mdir = outdir / "media"
    try:
        mdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideolabelError(f"cannot create {outdir}: {exc.strerror}") from None

    cfg = ds.config
    ff = None
    if root is not None:
        from videolabel.media.binary import find_ffmpeg

        ff = find_ffmpeg(ffmpeg)
    clips_tables: dict[int, pd.DataFrame] = {}

    def clip_times(vi: int) -> tuple[float, float]:
        first = int(vids["first_clip"].iloc[vi])
        s, r = int(ds.clip_shard[first]), int(ds.clip_row[first])
        t = clips_tables.get(s)
        if t is None:
            path = cache_dir / SHARDS / f"{ds.shard_names[s]}{CLIPS_SUFFIX}"
            t = pq.read_table(path).to_pandas() if path.is_file() else pd.DataFrame()
            clips_tables[s] = t
        if r < len(t):
            return float(t["start_s"].iloc[r]), float(t["audio_start_s"].iloc[r])
        return 0.0, 0.0

    def thumb_of(row: int, clip: dict | None = None) -> str | None:
        """media/<stem>.thumb.png of a row's first clip (None: not in the cache)."""
        vi = df["_vi"].iloc[row]
        if pd.isna(vi):
            return None
        path = mdir / f"{M.media_stem(str(df['video_id'].iloc[row]))}.thumb.png"
        if not path.exists():
            if clip is None:
                clip = ds[int(vids["first_clip"].iloc[int(vi)])]
            M.thumbnail(clip["video"].numpy(), path)
        return f"media/{path.name}"

    cache_dir = Path(cache)
    clusters = sorted(df["_cluster"].unique().tolist())
    summary: list[dict[str, Any]] = []
    audio_jobs = []
    pages: dict[int, list[tuple[_Item, dict]]] = {}
    seeds: dict[str, list[list[str]]] = {}
    for ci, c in enumerate(clusters):
        sub = df[df["_cluster"] == c]
        agree = sub["av_agree"].dropna().astype(bool) if "av_agree" in sub.columns else pd.Series([], dtype=bool)
        label, purity, ent = _gt_stats(sub["_gt"]) if gt is not None else (None, float("nan"), float("nan"))
        order = sub.sort_values("_conf", ascending=False, na_position="last", kind="stable").index.tolist()
        n = min(per_cluster, len(order))
        n_ex = math.ceil(2 * n / 3)
        chosen = [_Item(i, "exemplar") for i in order[:n_ex]]
        n_out = n - n_ex
        if n_out:
            chosen += [_Item(i, "outlier") for i in order[len(order) - n_out:]]
        seeds[str(int(c))] = [[str(df["video_id"].iloc[i]), str(df["path"].iloc[i])] for i in order[:n_ex]]
        entries = []
        for it in chosen:
            r = df.loc[it.row]
            info: dict = {"strip": None, "spec": None, "thumb": None, "audio": None, "audio_note": None}
            stem = M.media_stem(str(r["video_id"]))
            vi = r["_vi"]
            in_cache = pd.notna(vi)
            has_audio = bool(vids["has_audio"].iloc[int(vi)]) if in_cache else bool(r.get("has_audio", True))
            if in_cache:
                vi = int(vi)
                clip = ds[int(vids["first_clip"].iloc[vi])]
                strip_png, spec = mdir / f"{stem}.frames.png", mdir / f"{stem}.spec.png"
                if not strip_png.exists():
                    M.frame_strip(clip["video"].numpy(), strip_png)
                if not spec.exists():
                    M.spectrogram_png(clip["audio"].numpy(), spec)
                info["strip"], info["spec"] = f"media/{strip_png.name}", f"media/{spec.name}"
                info["thumb"] = thumb_of(it.row, clip)
            src = None if root is None else source_file(root, r["path"])
            if not has_audio:
                info["audio_note"] = "no sound: the video has no audio stream"
            elif not in_cache:
                info["audio_note"] = "audio unavailable: video not in the cache"
            elif src is not None and src.is_file():
                wav = mdir / f"{stem}.wav"
                _, astart = clip_times(vi)
                audio_jobs.append((info, src, wav, astart))
            else:  # no source at hand: a preview reconstructed from the cached spectrogram
                wav = mdir / f"{stem}.gl.wav"
                if wav.exists() or M.synthesize_audio(
                        clip["audio"].numpy(), wav, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft,
                        win_length=round(cfg.win_ms * cfg.sample_rate / 1000),
                        hop_length=round(cfg.hop_ms * cfg.sample_rate / 1000), log_eps=cfg.log_eps):
                    info["audio"] = f"media/{wav.name}"
                    why = "no --source-root given" if src is None else "source file not found under --source-root"
                    info["audio_note"] = f"sound reconstructed from the cached spectrogram ({why})"
                else:
                    info["audio_note"] = "audio unavailable: the spectrogram could not be turned into sound"
            entries.append((it, info))
        pages[int(c)] = entries
        thumbs = []
        for i in order[:strip]:
            t = thumb_of(i)
            if t is not None:
                thumbs.append((t, float(df["_conf"].iloc[i]), str(df["path"].iloc[i])))
        summary.append({
            "cluster": int(c), "colour": ci, "size": len(sub),
            "conf": float(sub["_conf"].mean()) if sub["_conf"].notna().any() else float("nan"),
            "av": float(agree.mean()) if len(agree) else float("nan"),
            "stab": _stability(sub, other_cols), "label": label, "purity": purity, "entropy": ent,
            "thumbs": thumbs,
        })

    def run_audio(job) -> None:
        info, src, wav, astart = job
        ok = wav.exists() or M.extract_audio(cast(str, ff), src, wav, start_s=astart, duration_s=cfg.audio_seconds,
                                             sample_rate=cfg.sample_rate)
        if ok:
            info["audio"] = f"media/{wav.name}"
        else:
            info["audio_note"] = "audio unavailable: ffmpeg could not read the source file"

    if audio_jobs:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(run_audio, audio_jobs))

    colour_of = {s["cluster"]: s["colour"] for s in summary}
    map_html = map_section(df, feats, vids, colour_of, gt is not None)
    title = f"videolabel report: {a.name}"
    try:
        for c, entries in pages.items():
            (outdir / cluster_file(c)).write_text(
                cluster_page(title, c, df, entries, other_cols, gt is not None,
                              next(s for s in summary if s["cluster"] == c)), encoding="utf-8")
        index = outdir / "index.html"
        index.write_text(index_page(title, a, summary, gt is not None, shown_head, len(df), map_html, seeds,
                                     Path(assignments_path).name), encoding="utf-8")
    except OSError as exc:
        raise VideolabelError(f"cannot write the report in {outdir}: {exc.strerror}") from None
    return index
