"""``videolabel report``: the static cluster site built from the AV-Digits cache (no model trained)."""

from __future__ import annotations

import json
import math
import os
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chromium import find_chromium
from conftest import run_cli

from videolabel.data.dataset import ShardDataset
from videolabel.report import build_report
from videolabel.report.media import media_stem

XSS = "<script>alert(1)</script>.mp4"
PER_CLUSTER = 6


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows = 0
        self._in_tbody = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.rows += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def links(self) -> list[str]:
        return [a["href"] for t, a in self.tags if t == "a" and "href" in a]


def _parse(path: Path) -> _Collect:
    p = _Collect()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def write_assignments(cache: Path, labels_csv: Path, out: Path, *, seed: int = 0) -> pd.DataFrame:
    """A valid wide assignments file: cluster = digit for most videos, 2 heads, random confidence;
    the first video's path is replaced by XSS (the video stays matched to the cache by video_id)."""
    rng = np.random.default_rng(seed)
    vids = ShardDataset(cache).videos
    gt = pd.read_csv(labels_csv, dtype={"path": str, "label": str}).set_index("path")["label"]
    cl = vids["path"].map(gt).astype(int).to_numpy()
    flip = rng.random(len(cl)) < 0.1
    cl = np.where(flip, (cl + 1) % 10, cl)
    h1 = np.where(rng.random(len(cl)) < 0.2, (cl + 3) % 10, cl)
    conf = rng.uniform(0.2, 1.0, len(cl)).astype(np.float32)
    conf[0] = 0.999  # the XSS row is an exemplar: always shown
    paths = vids["path"].astype(str).tolist()
    paths[0] = XSS
    df = pd.DataFrame({
        "video_id": vids["video_id"].astype(str).to_numpy(), "path": paths, "cluster": cl.astype(np.int64),
        "confidence": conf, "margin": conf / 2, "cluster_h0": cl.astype(np.int64), "prob_h0": conf,
        "cluster_h1": h1.astype(np.int64), "prob_h1": rng.uniform(0.2, 1.0, len(cl)).astype(np.float32),
        "has_audio": vids["has_audio"].to_numpy(bool),
        "av_agree": pd.array(rng.random(len(cl)) < 0.7, dtype="boolean"),
    })
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"videolabel": b'{"head": 0, "name": "fake"}'})
    pq.write_table(table, out)
    return df


def write_features(df: pd.DataFrame, out: Path, *, seed: int = 0) -> None:
    """A features Parquet as `assign --features` writes it: video and audio features that are a
    cluster's own direction plus noise (so the map has a visible structure), rows in reverse order."""
    rng = np.random.default_rng(seed)
    cl = df["cluster"].to_numpy()
    v = 3.0 * np.eye(16, dtype=np.float32)[cl] + rng.normal(0, 1, (len(cl), 16)).astype(np.float32) + 5.0
    au = 3.0 * np.eye(12, dtype=np.float32)[cl] + rng.normal(0, 1, (len(cl), 12)).astype(np.float32)
    rev = slice(None, None, -1)
    pq.write_table(pa.table({
        "video_id": df["video_id"].astype(str).to_numpy()[rev], "path": df["path"].astype(str).to_numpy()[rev],
        "has_audio": df["has_audio"].to_numpy(bool)[rev],
        "video_features": pa.FixedSizeListArray.from_arrays(pa.array(v[rev].reshape(-1)), 16),
        "audio_features": pa.FixedSizeListArray.from_arrays(pa.array(au[rev].reshape(-1)), 12),
    }), out)


@pytest.fixture(scope="module")
def built(avdigits_cache, tmp_path_factory):
    cache, labels = avdigits_cache
    tmp = tmp_path_factory.mktemp("report")
    df = write_assignments(cache, labels, tmp / "a.parquet")
    # source root: a link per assignment path (the XSS name included) to the real video
    src_root = tmp / "src"
    videos = labels.parent / "videos"
    real = ShardDataset(cache).videos["path"].astype(str).tolist()
    for rel, orig in zip(df["path"], real):
        dst = src_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(videos / orig, dst)
    out = tmp / "site"
    write_features(df, tmp / "f.parquet")
    index = build_report(tmp / "a.parquet", cache, out, gt=labels, per_cluster=PER_CLUSTER, source_root=src_root,
                         features=tmp / "f.parquet")
    return index, df


def test_site_structure_and_no_network(built):
    index, df = built
    out = index.parent
    p = _parse(index)
    clusters = sorted(df["cluster"].unique())
    sizes = df["cluster"].value_counts()
    assert p.rows == len(clusters)
    links = [h for h in p.links() if h.startswith("cluster_")]
    assert sorted(set(links)) == [f"cluster_{c:03d}.html" for c in clusters]
    for h in links:
        assert (out / h).is_file()
    # index: a strip of each cluster's most confident thumbnails, a name field per row, the map
    thumbs = [a for t, a in p.tags if t == "img" and "thumb" in a.get("class", "")]
    assert len(thumbs) == sum(min(6, int(sizes[c])) for c in clusters)
    assert sum(1 for t, a in p.tags if t == "input" and "name" in a.get("class", "")) == len(clusters)
    assert sum(1 for t, a in p.tags if t == "svg") == 2  # by cluster, and by ground truth (--gt)
    assert p.count("circle") == 2 * len(df)
    for _tag, a in p.tags:
        ref = a.get("src") or a.get("href")
        if ref and not ref.startswith("#"):
            assert (out / ref).is_file(), ref
    for c in clusters:
        page = out / f"cluster_{c:03d}.html"
        cp = _parse(page)
        n = min(PER_CLUSTER, int(sizes[c]))
        cards = [a for t, a in cp.tags if t == "figure" and "card" in a.get("class", "")]
        assert len(cards) == n
        assert sum("outlier" in a["class"] for a in cards) == n - math.ceil(2 * n / 3)
        assert cp.count("img") == 3 * n  # thumbnail + frame strip + spectrogram per card
        assert cp.count("audio") == n  # every AV-Digits video has sound, every source is there
        for _, a in cp.tags:
            ref = a.get("src") or a.get("href")
            if ref:
                assert (out / ref.split("#")[0]).is_file(), ref
    text = index.read_text()
    assert "purity" in text and "inter-head stability" in text
    for f in out.rglob("*"):
        if f.is_file():
            assert not re.search(rb"https?://", f.read_bytes()), f
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{8}\.(frames\.png|spec\.png|thumb\.png|wav)", f.name)
               for f in (out / "media").iterdir())


def test_index_sizes_strips_and_seeds_follow_the_assignments(built):
    """The strip holds the cluster's most confident videos in order; the size bar is size / largest size;
    the seeds of a cluster (what the naming form writes) are exactly its page's exemplars."""
    index, df = built
    html = index.read_text(encoding="utf-8")
    sizes = df["cluster"].value_counts()
    seeds = json.loads(re.search(r'<script type="application/json" id="seed-videos">(.*?)</script>', html, re.S).group(1))
    ids = df.set_index("video_id")
    for c in sorted(sizes.index):
        row = re.search(rf'<tr id="row-{c:03d}">(.*?)</tr>', html, re.S).group(1)
        width = float(re.search(r'<td class="num" data-v="\d+"><span class="bar "><span style="width:([\d.]+)%"', row).group(1))
        assert width == pytest.approx(100 * sizes[c] / sizes.max(), abs=0.06)
        sub = df[df["cluster"] == c].sort_values("confidence", ascending=False, kind="stable")
        stems = re.findall(r'class="thumb" loading="lazy" src="media/([^"]+)\.thumb\.png"', row)
        assert stems == [media_stem(v) for v in sub["video_id"].head(6)]
        n = min(PER_CLUSTER, int(sizes[c]))
        assert [v for v, _ in seeds[str(c)]] == sub["video_id"].head(math.ceil(2 * n / 3)).tolist()
        assert all(ids.loc[v, "path"] == p for v, p in seeds[str(c)])  # the XSS path too, unharmed


def test_paths_are_escaped(built):
    index, df = built
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;.mp4"
    c = int(df["cluster"].iloc[0])
    for page in index.parent.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "</script>.mp4" not in text
        if page.name == f"cluster_{c:03d}.html":
            assert text.count(escaped) == 1  # in its card's detail (an exemplar)
        elif page.name == "index.html":
            assert text.count(escaped) == 3  # strip tooltip, and one tooltip on each map
        else:
            assert escaped not in text


def test_ground_truth_labels_and_map_legend_are_escaped(avdigits_cache, tmp_path):
    cache, labels = avdigits_cache
    df = write_assignments(cache, labels, tmp_path / "a.parquet")
    write_features(df, tmp_path / "f.parquet")
    bad = '<img src=x onerror=alert(2)>"&'
    g = pd.read_csv(labels, dtype=str)
    g.loc[g["label"] == "3", "label"] = bad
    g.to_csv(tmp_path / "gt.csv", index=False)
    index = build_report(tmp_path / "a.parquet", cache, tmp_path / "site", gt=tmp_path / "gt.csv", per_cluster=1,
                         strip=1, features=tmp_path / "f.parquet", source_root=tmp_path)
    pages = {p.name: p.read_text(encoding="utf-8") for p in index.parent.glob("*.html")}
    assert not any("<img src=x" in t for t in pages.values())
    text = pages["index.html"]
    legend = re.findall(r'<span class="lab"><span class="sw" style="background:[^"]+"></span>([^<]*)</span>', text)
    # ten digits (3 renamed, escaped; sorted last) and "no label" (the XSS row's path is not in labels.csv)
    assert legend == [d for d in "012456789"] + [escape(bad), "no label"]
    assert f'data-v="{escape(bad, quote=True)}">{escape(bad)}</td>' in text  # majority label of cluster 3
    assert sum(t.count(f"ground truth: {escape(bad)}") for t in pages.values()) >= 1


def test_without_features_there_is_no_map_but_a_hint(avdigits_cache, tmp_path):
    cache, labels = avdigits_cache
    write_assignments(cache, labels, tmp_path / "a.parquet")
    index = build_report(tmp_path / "a.parquet", cache, tmp_path / "site", per_cluster=1, strip=0, source_root=tmp_path)
    p = _parse(index)
    assert p.count("svg") == 0 and 'id="no-map"' in index.read_text() and "assign" in index.read_text()
    assert not any("thumb" in a.get("class", "") for t, a in p.tags if t == "img")  # --strip 0


def test_browser_index_cluster_page_map_and_naming_form(built, tmp_path):
    """Headless Chromium, driven as a person would: sort, follow a cluster link, count the grid, hover and
    pin a card, find the map and follow a dot, name two clusters and download seeds.csv, which
    `videolabel propagate` then reads."""
    if find_chromium() is None:
        pytest.skip("chromium not installed: .ci/run installs Debian's chromium; apt-get install chromium to run this test")
    from chromium import Chromium

    from videolabel.assignments import load_assignments
    from videolabel.propagate import propagate_labels, read_seeds

    index, df = built
    sizes = df["cluster"].value_counts()
    clusters = sorted(sizes.index)
    downloads = tmp_path / "downloads"
    with Chromium(width=1280, height=900) as b:
        b.allow_downloads(downloads)
        b.open(index.as_uri())
        assert b.eval("document.querySelectorAll('#clusters tbody tr').length") == len(clusters)
        loaded = b.eval("Promise.all(Array.prototype.map.call(document.querySelectorAll('img.thumb'), function(i){"
                        " i.loading = 'eager'; return i.decode().then(function(){ return i.naturalWidth; }); }))")
        assert len(loaded) == sum(min(6, int(sizes[c])) for c in clusters) and min(loaded) > 0
        shot = b.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20000

        # sorting kept: a click on "size" sorts the rows by size, a second click reverses them
        order = "Array.prototype.map.call(document.querySelectorAll('#clusters tbody tr'), function(r){ return +r.cells[2].getAttribute('data-v'); })"
        b.click("#clusters th:nth-child(3)")
        assert b.eval(order) == sorted(sizes.tolist())
        b.click("#clusters th:nth-child(3)")
        assert b.eval(order) == sorted(sizes.tolist(), reverse=True)

        # follow the (now first) cluster's link: a grid of thumbnails, each with its confidence
        href = b.eval("document.querySelector('#clusters tbody tr a').getAttribute('href')")
        c = int(href[8:11])
        b.click_and_wait("#clusters tbody tr td a")
        assert b.url().endswith(href)
        n = min(PER_CLUSTER, int(sizes[c]))
        assert b.eval("document.querySelectorAll('.grid .card img.thumb').length") == n
        assert b.eval("document.querySelectorAll('.grid.outliers .card').length") == n - math.ceil(2 * n / 3)
        confs = b.eval("Array.prototype.map.call(document.querySelectorAll('.grid.exemplars figcaption'), function(f){ return parseFloat(f.textContent); })")
        top = df[df["cluster"] == c]["confidence"].sort_values(ascending=False).head(len(confs)).tolist()
        assert confs == pytest.approx(top, abs=6e-4)  # shown with 3 decimals, highest first
        # hovering shows a card in the viewer; a click pins it there (frames, spectrogram, sound)
        assert b.eval("document.querySelectorAll('#viewer img').length") == 0
        b.hover(".grid.exemplars .card:nth-child(1)")
        first = b.eval("document.querySelector('.grid.exemplars .card:nth-child(1)').getAttribute('data-video')")
        assert b.eval("document.getElementById('viewer').getAttribute('data-video')") == first
        b.click(".grid.outliers .card")
        b.hover(".grid.exemplars .card:nth-child(1)")  # pinned: hovering elsewhere does not replace it
        pinned = b.eval("document.querySelector('.grid.outliers .card').getAttribute('data-video')")
        assert b.eval("document.getElementById('viewer').getAttribute('data-video')") == pinned != first
        assert b.eval("[document.querySelectorAll('#viewer img.frames').length, document.querySelectorAll('#viewer img.spec').length,"
                      " document.querySelectorAll('#viewer audio').length]") == [1, 1, 1]

        # the map: one dot per video on each of its two panels; a dot opens its cluster's page
        b.open(index.as_uri())
        assert b.eval("document.querySelectorAll('#map svg.map').length") == 2
        assert b.eval("document.querySelectorAll('#map svg.map:not(.gt) circle').length") == len(df)
        last = "#map svg.map:not(.gt) a:last-of-type circle"  # drawn last: on top of any other dot
        dot = b.eval(f"document.querySelector('{last}').closest('a').getAttribute('href')")
        b.click_and_wait(last)
        assert b.url().endswith(dot)

        # name two clusters (one name a spreadsheet would run, with a comma and quotes) and download
        b.open(index.as_uri())
        names = {clusters[0]: '=HYPERLINK("x"), zero', clusters[3]: "three"}
        for cl, name in names.items():
            b.type_into(f"input.name[data-cluster='{cl}']", name)
        b.click("#download-seeds")
        got = Path(b.wait_download()["filePath"])
        assert "2 cluster(s) named" in b.eval("document.getElementById('naming-status').textContent")
    assert got.name == "seeds.csv"
    assert got.read_text(encoding="utf-8").splitlines()[1].endswith(',"\'=HYPERLINK(""x""), zero"')  # as `select` writes
    seeds = read_seeds(got)
    a = load_assignments(index.parent.parent / "a.parquet")
    for cl, name in names.items():
        sub = df[df["cluster"] == cl].sort_values("confidence", ascending=False, kind="stable")
        n = min(PER_CLUSTER, len(sub))
        assert sorted(seeds.loc[seeds["label"] == name, "video_id"]) == sorted(sub["video_id"].head(math.ceil(2 * n / 3)))
    labels = propagate_labels(a.df, seeds).set_index("video_id")
    for cl, name in names.items():
        assert (labels.loc[df.loc[df["cluster"] == cl, "video_id"], "label"] == name).all()
    assert labels["label"].isna().sum() == int((~df["cluster"].isin(list(names))).sum())  # the rest abstain


@pytest.mark.parametrize("what", ["assignments", "cache"])
def test_cli_missing_inputs(built, avdigits_cache, tmp_path, what):
    index, _ = built
    cache, _ = avdigits_cache
    a = index.parent.parent / "a.parquet"
    if what == "assignments":
        a = tmp_path / "nope.parquet"
    else:
        cache = tmp_path / "nocache"
    r = run_cli("report", str(a), "--cache", str(cache), "--out", str(tmp_path / "site"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videolabel: error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_without_sources_the_sound_is_rebuilt_from_the_cache(avdigits_cache, tmp_path):
    import wave

    cache, labels = avdigits_cache
    write_assignments(cache, labels, tmp_path / "a.parquet")
    index = build_report(tmp_path / "a.parquet", cache, tmp_path / "site", per_cluster=2)
    page = sorted(index.parent.glob("cluster_*.html"))[0]
    cp = _parse(page)
    assert cp.count("audio") == 2 and "reconstructed from the cached spectrogram" in page.read_text()
    wavs = sorted((index.parent / "media").glob("*.gl.wav"))
    assert wavs
    with wave.open(str(wavs[0])) as fh:
        rate, frames = fh.getframerate(), fh.readframes(fh.getnframes())
    pcm = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768
    assert rate == 16000 and 1.8 < len(pcm) / rate < 2.2  # the 2 s behind one spectrogram
    assert np.sqrt(np.mean(pcm**2)) > 1e-3  # a spoken digit, not silence


def test_rebuilt_tone_keeps_its_pitch(tmp_path):
    """A 440 Hz tone's log-mel, rebuilt into sound, still peaks at 440 Hz."""
    import wave

    import torch
    import torchaudio.functional as AF

    from videolabel.report.media import synthesize_audio

    sr, n_fft, win, hop = 16000, 2048, 320, 160
    t = np.arange(int(2.0 * sr)) / sr
    sig = torch.as_tensor(0.5 * np.sin(2 * np.pi * 440 * t), dtype=torch.float32)
    spec = torch.stft(sig, n_fft, hop, win, torch.hann_window(win), center=False, return_complex=True).abs() ** 2
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sr / 2, 257, sr)
    logmel = torch.log(fb.T @ spec + 1e-6).numpy()
    assert synthesize_audio(logmel, tmp_path / "t.wav", sample_rate=sr, n_fft=n_fft, win_length=win,
                            hop_length=hop, log_eps=1e-6)
    with wave.open(str(tmp_path / "t.wav")) as fh:
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float64)
    freqs = np.fft.rfftfreq(len(pcm), 1 / sr)
    peak = freqs[np.argmax(np.abs(np.fft.rfft(pcm)))]
    assert abs(peak - 440) < 15, peak
