"""Build the static cluster report: ``index.html`` plus one ``cluster_NNN.html`` per cluster.

Self-contained: plain HTML, inline CSS and a little inline vanilla JS (column sorting), media files
under ``media/``; no network, works from ``file://``. Everything shown that comes from file names,
paths or labels is HTML-escaped; media file names are derived from ``video_id`` only.

Columns of the index:

* size, mean confidence (of the report's head), audio-visual agreement (fraction of the cluster's
  videos with ``av_agree`` true, among those where it is known);
* inter-head stability: for every *other* head h, the cluster's members are mostly sent to one
  cluster of head h (their majority); stability is the fraction of (video, other head) pairs where
  the video is in that majority, i.e. how often the other heads keep the cluster together
  (1.0: every head groups it identically; "—" with a single head);
* with ground truth: majority label, purity (its share of the labelled members) and the entropy
  (nats) of the labels inside the cluster.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from videolabel.errors import VideolabelError
from videolabel.groundtruth import source_file
from videolabel.report import media as M

CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#eee;cursor:pointer;user-select:none}
td.l,th.l{text-align:left}
.item{background:#fff;border:1px solid #ccc;margin:.6em 0;padding:.5em;display:flex;gap:1em;align-items:flex-start}
.item img{display:block;image-rendering:pixelated;margin-bottom:.3em}
.meta{font-size:.9em}
.path{font-family:monospace;word-break:break-all}
.na{color:#a00;font-size:.9em}
.note{color:#555;font-size:.9em;max-width:60em}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var asc = th.getAttribute('data-dir') !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function(h){ h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    rows.sort(function(a, b){
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : (isNaN(nx) ? 1 : 0) - (isNaN(ny) ? 1 : 0) || String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){ tbody.appendChild(r); });
  });
});
"""


def _page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n{js}\n</body></html>\n")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def cluster_file(c: int) -> str:
    return f"cluster_{int(c):03d}.html"


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
                 per_cluster: int = 12, head: int | None = None, source_root: str | Path | None = None,
                 ffmpeg: str | None = None) -> Path:
    """Write the report folder ``out`` and return the path of its ``index.html``."""
    from videolabel.assignments import load_assignments
    from videolabel.data.dataset import ShardDataset
    from videolabel.ingest.shards import CLIPS_SUFFIX, SHARDS

    if per_cluster < 1:
        raise VideolabelError("--per-cluster must be >= 1")
    a = load_assignments(assignments_path)
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

    cache_dir = Path(cache)
    clusters = sorted(df["_cluster"].unique().tolist())
    summary = []
    audio_jobs = []
    pages: dict[int, list[tuple[_Item, dict]]] = {}
    for c in clusters:
        sub = df[df["_cluster"] == c]
        agree = sub["av_agree"].dropna().astype(bool) if "av_agree" in sub.columns else pd.Series([], dtype=bool)
        label, purity, ent = _gt_stats(sub["_gt"]) if gt is not None else (None, float("nan"), float("nan"))
        summary.append({
            "cluster": int(c), "size": len(sub), "conf": float(sub["_conf"].mean()) if sub["_conf"].notna().any() else float("nan"),
            "av": float(agree.mean()) if len(agree) else float("nan"),
            "stab": _stability(sub, other_cols), "label": label, "purity": purity, "entropy": ent,
        })
        order = sub.sort_values("_conf", ascending=False, na_position="last", kind="stable").index.tolist()
        n = min(per_cluster, len(order))
        n_ex = math.ceil(2 * n / 3)
        chosen = [_Item(i, "exemplar") for i in order[:n_ex]]
        n_out = n - n_ex
        if n_out:
            chosen += [_Item(i, "outlier") for i in order[len(order) - n_out:]]
        entries = []
        for it in chosen:
            r = df.loc[it.row]
            info: dict = {"strip": None, "spec": None, "audio": None, "audio_note": None}
            stem = M.media_stem(str(r["video_id"]))
            vi = r["_vi"]
            in_cache = pd.notna(vi)
            has_audio = bool(vids["has_audio"].iloc[int(vi)]) if in_cache else bool(r.get("has_audio", True))
            if in_cache:
                vi = int(vi)
                clip = ds[int(vids["first_clip"].iloc[vi])]
                strip, spec = mdir / f"{stem}.frames.png", mdir / f"{stem}.spec.png"
                if not strip.exists():
                    M.frame_strip(clip["video"].numpy(), strip)
                if not spec.exists():
                    M.spectrogram_png(clip["audio"].numpy(), spec)
                info["strip"], info["spec"] = f"media/{strip.name}", f"media/{spec.name}"
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

    def run_audio(job) -> None:
        info, src, wav, astart = job
        ok = wav.exists() or M.extract_audio(ff, src, wav, start_s=astart, duration_s=cfg.audio_seconds,
                                             sample_rate=cfg.sample_rate)
        if ok:
            info["audio"] = f"media/{wav.name}"
        else:
            info["audio_note"] = "audio unavailable: ffmpeg could not read the source file"

    if audio_jobs:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(run_audio, audio_jobs))

    title = f"videolabel report: {a.name}"
    try:
        for c, entries in pages.items():
            (outdir / cluster_file(c)).write_text(
                _cluster_page(title, c, df, entries, other_cols, gt is not None,
                              next(s for s in summary if s["cluster"] == c)), encoding="utf-8")
        index = outdir / "index.html"
        index.write_text(_index_page(title, a, summary, gt is not None, shown_head, len(df)), encoding="utf-8")
    except OSError as exc:
        raise VideolabelError(f"cannot write the report in {outdir}: {exc.strerror}") from None
    return index


def _index_page(title: str, a, summary: list[dict], with_gt: bool, shown_head: int | None, n_videos: int) -> str:
    cols = ["cluster", "size", "mean confidence", "AV agreement", "inter-head stability"]
    if with_gt:
        cols += ["majority label", "purity", "entropy (nats)"]
    head = "".join(f"<th class=\"{'l' if c in ('cluster', 'majority label') else ''}\">{escape(c)}</th>" for c in cols)
    rows = []
    for s in summary:
        c = s["cluster"]
        cells = [
            f"<td class=\"l\" data-v=\"{c}\"><a href=\"{escape(cluster_file(c))}\">cluster {c:03d}</a></td>",
            f"<td data-v=\"{s['size']}\">{s['size']}</td>",
            f"<td data-v=\"{_num(s['conf'])}\">{_fmt(s['conf'])}</td>",
            f"<td data-v=\"{_num(s['av'])}\">{_fmt(s['av'])}</td>",
            f"<td data-v=\"{_num(s['stab'])}\">{_fmt(s['stab'])}</td>",
        ]
        if with_gt:
            lab = s["label"]
            cells += [
                f"<td class=\"l\" data-v=\"{escape(lab or '', quote=True)}\">{escape(lab) if lab is not None else '—'}</td>",
                f"<td data-v=\"{_num(s['purity'])}\">{_fmt(s['purity'])}</td>",
                f"<td data-v=\"{_num(s['entropy'])}\">{_fmt(s['entropy'])}</td>",
            ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    hd = "the cluster column" if shown_head is None else f"head {shown_head}"
    body = (
        f"<h1>{escape(title)}</h1>\n"
        f"<p>{n_videos} videos in {len(summary)} clusters ({escape(hd)}; heads: {escape(', '.join(map(str, a.heads)))}). "
        f"Click a column header to sort.</p>\n"
        f"<table class=\"sortable\" id=\"clusters\"><thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows) + "\n</tbody></table>\n"
        "<p class=\"note\">AV agreement: fraction of the cluster's videos whose audio and visual predictions agree "
        "(where known). Inter-head stability: for each other head, the share of the cluster's videos that this head "
        "puts in the cluster it gives most of them, averaged over the other heads (1 = all heads keep the cluster "
        "together; — with a single head). Purity: share of the majority ground-truth label among the labelled videos; "
        "entropy: of the ground-truth labels in the cluster, in nats.</p>"
    )
    return _page(title, body, SORT_JS)


def _cluster_page(title: str, c: int, df: pd.DataFrame, entries, other_cols: list[str], with_gt: bool,
                  s: dict) -> str:
    parts = ["<p><a href=\"index.html\">&larr; all clusters</a></p>",
             f"<h1>cluster {c:03d}</h1>",
             f"<p>{s['size']} videos; mean confidence {_fmt(s['conf'])}; AV agreement {_fmt(s['av'])}; "
             f"inter-head stability {_fmt(s['stab'])}"
             + (f"; majority label {escape(s['label']) if s['label'] is not None else '—'}, purity {_fmt(s['purity'])}"
                if with_gt else "") + f". Showing {len(entries)}: exemplars (highest confidence) first, "
             "outliers (lowest confidence) last.</p>"]
    kind = None
    for it, info in entries:
        if it.kind != kind:
            kind = it.kind
            parts.append(f"<h2>{'Exemplars' if kind == 'exemplar' else 'Outliers'}</h2>")
        r = df.loc[it.row]
        media = []
        if info["strip"]:
            media.append(f"<img class=\"frames\" src=\"{escape(info['strip'])}\" alt=\"frames of the first clip\">")
            media.append(f"<img class=\"spec\" src=\"{escape(info['spec'])}\" alt=\"log-mel spectrogram of the first clip\">")
        else:
            media.append("<p class=\"na\">not in the cache: no frames or spectrogram</p>")
        if info["audio"]:
            media.append(f"<audio controls preload=\"none\" src=\"{escape(info['audio'])}\"></audio>")
            if info["audio_note"]:
                media.append(f"<p class=\"na\">{escape(info['audio_note'])}</p>")
        else:
            media.append(f"<p class=\"na\">{escape(info['audio_note'] or 'audio unavailable')}</p>")
        heads = ", ".join(f"{escape(col.removeprefix('cluster_'))}: {int(r[col])}" for col in other_cols)
        meta = [f"<div class=\"path\">{escape(str(r['path']))}</div>",
                f"<div>video_id {escape(str(r['video_id']))}</div>",
                f"<div>confidence {_fmt(float(r['_conf']))}</div>"]
        if heads:
            meta.append(f"<div>other heads: {heads}</div>")
        if with_gt:
            g = r["_gt"]
            meta.append(f"<div>ground truth: {escape(str(g)) if pd.notna(g) else '—'}</div>")
        parts.append(f"<div class=\"item {kind}\"><div>{''.join(media)}</div><div class=\"meta\">{''.join(meta)}</div></div>")
    return _page(f"{title}: cluster {c:03d}", "\n".join(parts))
