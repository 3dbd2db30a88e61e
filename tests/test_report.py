"""``videolabel report``: the static cluster site built from the AV-Digits cache (no model trained)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from videolabel.data.dataset import ShardDataset
from videolabel.report import build_report

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
    index = build_report(tmp / "a.parquet", cache, out, gt=labels, per_cluster=PER_CLUSTER, source_root=src_root)
    return index, df


def test_site_structure_and_no_network(built):
    index, df = built
    out = index.parent
    p = _parse(index)
    clusters = sorted(df["cluster"].unique())
    assert p.rows == len(clusters)
    links = [h for h in p.links() if h.startswith("cluster_")]
    assert sorted(links) == [f"cluster_{c:03d}.html" for c in clusters]
    for h in links:
        assert (out / h).is_file()
    for c in clusters:
        page = out / f"cluster_{c:03d}.html"
        cp = _parse(page)
        n = min(PER_CLUSTER, int((df["cluster"] == c).sum()))
        assert cp.count("img") == 2 * n  # frame strip + spectrogram per item
        assert cp.count("audio") == n  # every AV-Digits video has sound, every source is there
        for _, a in cp.tags:
            ref = a.get("src") or a.get("href")
            if ref:
                assert (out / ref).is_file(), ref
    text = index.read_text()
    assert "purity" in text and "inter-head stability" in text
    for f in out.rglob("*"):
        if f.is_file():
            assert not re.search(rb"https?://", f.read_bytes()), f
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{8}\.(frames\.png|spec\.png|wav)", f.name)
               for f in (out / "media").iterdir())


def test_paths_are_escaped(built):
    index, df = built
    hits = 0
    for page in index.parent.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text
        hits += text.count("&lt;script&gt;alert(1)&lt;/script&gt;.mp4")
    assert hits == 1  # on its cluster's page (an exemplar), escaped


def test_chromium_renders(built, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed: .ci/run installs Debian's chromium; apt-get install chromium to run this test")
    index, df = built
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]

    def run(*args: str, profile: str) -> subprocess.CompletedProcess:
        return subprocess.run([*flags, f"--user-data-dir={tmp_path / profile}", *args],
                              capture_output=True, text=True, timeout=60)

    shot = tmp_path / "shot.png"  # kept in the test's tmp dir
    r = run(f"--screenshot={shot}", "--window-size=1200,900", index.as_uri(), profile="p1")
    assert shot.is_file() and shot.stat().st_size > 5000, r.stderr[-2000:]
    dom = run("--dump-dom", index.as_uri(), profile="p2").stdout
    first = re.search(r'href="(cluster_\d{3}\.html)"', dom)
    assert first, dom[:2000]
    page = index.parent / first.group(1)
    dom = run("--dump-dom", page.as_uri(), profile="p3").stdout
    c = int(first.group(1)[8:11])
    n = min(PER_CLUSTER, int((df["cluster"] == c).sum()))
    assert len(re.findall(r"<img\b", dom)) == 2 * n
    assert len(re.findall(r"<audio\b", dom)) == n


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
