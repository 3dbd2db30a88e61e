"""Per-video sound level and noise floor (videolabel/data/levels.py): the maths against a brute-force reference,
the table over a real cache, and the setting through training and labelling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from videolabel.data.augment import AudioAugment
from videolabel.data.levels import (
    LEVEL_PEAK,
    Levels,
    apply_levels,
    collection_gain,
    levels_for,
    video_level_offsets,
    video_level_table,
    video_peaks,
)

EMPTY = math.log(1e-6)


def _reference(videos: list[np.ndarray], floor: float, gain=0.0, q=0.5) -> np.ndarray:
    """video_level_offsets written out video by video and band by band in numpy (float64)."""
    margin, empty = math.log(2.0), math.log(1e-6) + 0.01
    out = np.zeros((len(videos), videos[0].shape[1]))
    for v, x in enumerate(videos):
        x = x.astype(np.float64)
        if not (x > empty).any():
            continue
        for b in range(x.shape[1]):
            vals = x[:, b]  # every bin: those that hold no sound are the quietest
            c = max(floor, float(np.quantile(vals, q)) + gain + margin)
            out[v, b] = gain - c + floor
    return out


def _videos(seed: int) -> list[torch.Tensor]:
    """Five videos of 1-3 clips [c, 8 bands, 40 frames]: a word over backgrounds of several levels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, (bg, word) in zip((3, 1, 2, 2, 2), ((-2.0, 6.0), (1.5, 9.0), (-9.0, 2.0), (-6.0, -1.0), (None, 0.0))):
        if bg is None:
            out.append(torch.full((n, 8, 40), EMPTY))  # no sound at all
            continue
        x = 0.3 * torch.randn(n, 8, 40, generator=g) + bg
        x[0, 2:6, 12:20] = word  # the word, in the first clip only
        x[-1, :, 30:] = EMPTY  # padding: the quietest bins of the background
        out.append(x)
    return out


def test_offsets_peaks_and_gain_match_brute_force():
    vids = _videos(0)
    counts = torch.tensor([len(v) for v in vids])
    x = torch.cat(vids)
    got = video_level_offsets(x, counts, 0.0)
    np.testing.assert_allclose(got.numpy(), _reference([v.numpy() for v in vids], 0.0), rtol=0, atol=1e-5)
    assert torch.equal(got[0], torch.zeros(8)) and torch.equal(got[4], torch.zeros(8))  # usual level; silent
    assert (got[1] < 0).all()  # a loud background: every band's floor raised
    # with a gain, another fixed floor and quantile; videos split across calls the same way
    got = video_level_offsets(x, counts, -1.0, gain=3.5, quantile=0.25)
    np.testing.assert_allclose(got.numpy(), _reference([v.numpy() for v in vids], -1.0, gain=3.5, q=0.25),
                               rtol=0, atol=1e-5)
    two = torch.cat([video_level_offsets(torch.cat(vids[:2]), counts[:2], -1.0, gain=3.5, quantile=0.25),
                     video_level_offsets(torch.cat(vids[2:]), counts[2:], -1.0, gain=3.5, quantile=0.25)])
    torch.testing.assert_close(two, got, rtol=0, atol=1e-6)
    # the peaks: each video's loudest bin, -inf for no sound
    peaks = video_peaks(x, counts)
    want = [float(v[v > EMPTY + 0.01].max()) if (v > EMPTY + 0.01).any() else -math.inf for v in vids]
    assert peaks.tolist() == want
    # the collection's gain: the median peak to LEVEL_PEAK, unless it is within the tolerance
    assert collection_gain(torch.tensor([2.0, 3.0, 4.0, -math.inf])) == pytest.approx(LEVEL_PEAK - 3.0)
    assert collection_gain(torch.tensor([5.5, 6.9, 6.2])) == 0.0  # within 1 nat
    assert collection_gain(torch.tensor([8.0, 7.5, 7.2])) == pytest.approx(LEVEL_PEAK - 7.5)  # loud: down
    assert collection_gain(torch.tensor([-math.inf])) == 0.0
    with pytest.raises(ValueError, match="counts"):
        video_level_offsets(x, torch.tensor([1, 1]), 0.0)
    with pytest.raises(ValueError, match="counts"):
        video_peaks(x, torch.tensor([1, 1]))


def test_a_quiet_collection_and_loud_backgrounds_are_levelled_and_the_rest_left_alone():
    floor = torch.tensor(0.0)
    word = (slice(2, 6), slice(13, 19))
    g = torch.Generator().manual_seed(1)
    speech = torch.full((2, 8, 40), -9.0)  # a quiet room: above the stored epsilon after the gains below
    speech[0, word[0], word[1]] = 5.0
    speech += 0.2 * torch.randn(speech.shape, generator=g)
    noise = torch.full((2, 8, 40), 1.0) + 0.2 * torch.randn(speech.shape, generator=g)  # a fan, above the floor
    noisy = torch.logaddexp(speech, noise)
    x = torch.cat([speech, noisy])
    vidx = torch.arange(2).repeat_interleave(2)
    off = video_level_offsets(x, torch.tensor([2, 2]), 0.0)
    seen = torch.logaddexp(apply_levels(x, off, vidx), floor)
    # a recording at a usual level over a quiet background: exactly as it was
    assert torch.equal(off[0], torch.zeros(8))
    # the loud background reads as (nearly) silence, the word keeps most of its height above it
    assert float(seen[2:4][:, :, 25:].mean()) < 0.5 and float(torch.logaddexp(noise, floor).mean()) > 1.0
    assert float(seen[2][word].mean()) > 0.6 * float(seen[0][word].mean()) > 2.0
    # the same collection recorded 17 dB quieter: its gain brings it back, and it reads as before
    quiet = x - 4.0
    gain = collection_gain(video_peaks(quiet, torch.tensor([2, 2])))
    lower = float(video_peaks(x, torch.tensor([2, 2])).min())  # the median of two: the lower (torch.median)
    assert gain == pytest.approx(4.0 + LEVEL_PEAK - lower, abs=1e-4)
    again = torch.logaddexp(apply_levels(quiet, video_level_offsets(quiet, torch.tensor([2, 2]), 0.0, gain), vidx),
                            floor)
    back = torch.logaddexp(apply_levels(x, video_level_offsets(x, torch.tensor([2, 2]), 0.0, gain - 4.0), vidx),
                           floor)
    torch.testing.assert_close(again, back, rtol=0, atol=1e-5)
    assert float(again[0][word].mean()) > 2.0 > float(torch.logaddexp(quiet[0][word], floor).mean() - 1.0)


def test_the_table_over_a_real_cache(avdigits_cache):
    from videolabel.data.dataset import ShardDataset

    cache, _ = avdigits_cache
    ds = ShardDataset(cache)
    assert ds.level_stats is not None  # ingest stored each video's peak and background: the table is theirs
    stored = video_level_table(ds, 0.0)
    ds.level_stats = None  # measured from the stored sound instead
    table, gain, raised = video_level_table(ds, 0.0, batch_clips=7)  # small batches: videos split the same way
    assert stored[0].tobytes() == table.tobytes() and stored[1] == gain and stored[2].tolist() == raised.tolist()
    assert gain == 0.0 and not raised.any()  # AV-Digits' recordings: at the usual level, over a quiet floor
    first, counts = ds.videos["first_clip"].to_numpy(), ds.videos["n_clips"].to_numpy()
    for v in (0, 13, len(counts) - 1):
        clips = ds.read_audio(np.arange(first[v], first[v] + counts[v]))
        want = video_level_offsets(clips, torch.tensor([counts[v]]), 0.0)[0]
        torch.testing.assert_close(torch.from_numpy(table[v]), want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(video_level_table(ds, 0.0)[0], table)
    # a long video is measured on evenly spaced clips
    one, _, _ = video_level_table(ds, 0.0, max_clips=1)
    clip = ds.read_audio([int(first[0])])
    torch.testing.assert_close(torch.from_numpy(one[0]), video_level_offsets(clip, torch.tensor([1]), 0.0)[0])
    # read_audio: the stored sound, the batch reader's values
    idx = [5, 0, 17]
    assert torch.equal(ds.read_audio(idx), ds.__getitems__(idx)["audio"])
    # the setting decides: the run's floor under the table, None for the other levels
    assert levels_for(ds, "fixed", 1.0) is None and levels_for(ds, "auto", 1.0) is None
    np.testing.assert_array_equal(levels_for(ds, "video", 1.0).offsets.numpy(), table)
    # and the augmentation applies the fixed floor on levelled sound (its own levelling is off)
    aug = AudioAugment("tiny", train=False, level="video")
    a = apply_levels(ds.read_audio(idx), torch.from_numpy(table), torch.from_numpy(ds.clip_video[idx]))
    assert torch.equal(aug(a), AudioAugment("tiny", train=False)(a))


def test_the_table_says_what_it_did(avdigits_cache, tmp_path, monkeypatch):
    """The gain and the videos whose floor was raised: in the table, in :class:`Levels`, and in the first line a
    run logs (``metrics.jsonl``, event ``levels``)."""
    from videolabel.data.dataset import ShardDataset
    from videolabel.train.config import make_config
    from videolabel.train.loop import Trainer

    cache, _ = avdigits_cache
    ds = ShardDataset(cache)
    first, counts = ds.videos["first_clip"].to_numpy(), ds.videos["n_clips"].to_numpy()
    noisy = set(range(int(first[2]), int(first[2] + counts[2])))  # video 2 recorded over a loud background
    read = ds.read_audio

    def over_noise(idx):
        a = read(idx)
        for j, i in enumerate(idx):
            if int(i) in noisy:
                a[j] = torch.logaddexp(a[j].float(), torch.tensor(2.0)).to(a.dtype)
        return a

    ds.level_stats = None  # measured from the (altered) stored sound, not from what ingest stored with the videos
    monkeypatch.setattr(ds, "read_audio", over_noise)
    table, gain, raised = video_level_table(ds, 0.0)
    assert gain == 0.0 and np.flatnonzero(raised).tolist() == [2]
    assert (table[2] < -2.0).all() and (np.delete(table, 2, axis=0) == 0).all()
    lv = levels_for(ds, "video", 1.0)
    assert lv is not None and lv.raised.tolist() == raised.tolist()
    assert lv.record() == {"event": "levels", "gain_db": 0.0, "floors_raised": 1, "videos": len(ds.videos),
                           "source": "measured"}

    # the same collection recorded 4 nats (17.4 dB) quieter (stored as ingest stores it, log(mel + 1e-6)): a gain,
    # and no floor raised
    eps = float(ds.config.log_eps)
    monkeypatch.setattr(ds, "read_audio",
                        lambda idx: torch.log((read(idx).double().exp() - eps).clamp_min(0) * math.exp(-4.0) + eps))
    quiet = levels_for(ds, "video", 1.0)
    assert quiet is not None and not quiet.raised.any() and 3.0 < quiet.gain < 5.0
    assert quiet.record()["gain_db"] == pytest.approx(10 * quiet.gain / math.log(10), abs=0.01)

    # a run says what it did, before its first step; the fixed setting logs nothing of the kind
    for level in ("video", "fixed"):
        cfg = make_config(None, {"preset": "tiny", "num_clusters": 4, "num_heads": 1, "epochs": 1, "workers": 0,
                                 "progress": "none", "audio_level": level})
        trainer = Trainer(cache, tmp_path / level, cfg, device="cpu")
        trainer.close()
        lines = [json.loads(x) for x in (tmp_path / level / "metrics.jsonl").read_text().splitlines()]
        got = [r for r in lines if r.get("event") == "levels"]
        if level == "video":
            assert len(got) == 1 and got[0]["step"] == 0
            assert {k: got[0][k] for k in ("gain_db", "floors_raised", "videos", "source")} == {
                "gain_db": 0.0, "floors_raised": 0, "videos": len(ds.videos), "source": "ingest"}
        else:
            assert got == []


def test_training_and_labelling_read_levelled_sound(avdigits_cache, monkeypatch):
    """Every batch of a run with ``audio_level="video"`` is levelled on its way to the device (training steps and
    label passes go through ``Passes.to_device``); ``assign`` levels the same way, and still reports the sound's
    own level (``audio_db``, the silence flag)."""
    import videolabel.inference as inference
    from videolabel.assign_options import AssignOptions
    from videolabel.data.dataset import ShardDataset
    from videolabel.inference import RunModel, infer
    from videolabel.models import build_model
    from videolabel.train.config import make_config
    from videolabel.train.dist import DistInfo
    from videolabel.train.passes import Passes

    cache, _ = avdigits_cache
    ds = ShardDataset(cache)
    # AV-Digits' recordings are at a usual level over a quiet floor: the setting leaves them exactly as they are
    assert torch.equal(levels_for(ds, "video", 1.0).offsets, torch.zeros(len(ds.videos), ds.config.n_mels))
    table = torch.rand(len(ds.videos), ds.config.n_mels, generator=torch.Generator().manual_seed(0)) * 3 - 2
    cpu = DistInfo(0, 1, 0, torch.device("cpu"))
    cfg = make_config(None, {"preset": "tiny", "num_clusters": 4, "audio_level": "video"})
    first, counts = ds.videos["first_clip"].to_numpy(), ds.videos["n_clips"].to_numpy()
    passes = Passes(cfg, None, ds, None, cpu, first, counts, table)  # type: ignore[arg-type]
    batch = ds.__getitems__([3, 40, 7])
    _, audio, vidx = passes.to_device(batch)
    assert torch.equal(audio, batch["audio"].float() + table[vidx].unsqueeze(-1))
    plain = Passes(cfg, None, ds, None, cpu, first, counts)  # type: ignore[arg-type]
    assert torch.equal(plain.to_device(batch)[1], batch["audio"])

    # labelling: the run's setting asks for the table; all-zero offsets are the fixed path exactly
    torch.manual_seed(0)
    model = build_model("tiny", num_clusters=4, num_heads=2).eval()
    videos = np.arange(len(ds.videos))
    opts = AssignOptions(workers=0)

    def run_model(level: str) -> RunModel:
        tc = make_config(None, {"preset": "tiny", "num_clusters": 4, "num_heads": 2, "audio_level": level})
        return RunModel(model=model, train_config=tc, ingest_config={}, ingest_hash=ds.config.hash(),
                        checkpoint=cache, checkpoint_sha1="", run_id="test", cache=str(cache))

    fixed = infer(run_model("fixed"), ds, videos, opts, torch.device("cpu"))
    same = infer(run_model("video"), ds, videos, opts, torch.device("cpu"))
    for key in ("lv", "la", "fv", "fa", "audio_db"):
        assert torch.equal(same[key], fixed[key]), key
    asked = []
    monkeypatch.setattr(inference, "levels_for",
                        lambda d, level, floor, dev: asked.append((level, floor)) or Levels(table, 1.5, np.arange(len(ds.videos)) % 3 == 0))
    moved = infer(run_model("video"), ds, videos, opts, torch.device("cpu"))
    assert asked == [("video", 1.0)]
    assert not torch.allclose(moved["fa"], fixed["fa"]) and torch.equal(moved["fv"], fixed["fv"])
    assert torch.equal(moved["audio_db"], fixed["audio_db"])  # measured on the sound as recorded
    # and what the levelling did, per video, for the table (fixed runs have no such columns)
    assert "floor_raised" not in fixed and moved["floor_raised"].tolist() == (videos % 3 == 0).tolist()
    assert moved["level_gain_db"].tolist() == [6.51] * len(videos)  # 1.5 nats of power


def test_ingest_stores_each_videos_level_statistics(avdigits_cache):
    """What ingest stores with each video (videolabel/ingest/levelstats.py) is what a run would measure on the
    stored sound, bit for bit: the peak (:func:`video_peaks`), each band's median (:func:`torch.nanquantile`)."""
    import pyarrow.parquet as pq

    from videolabel.data.dataset import ShardDataset
    from videolabel.ingest.levelstats import band_medians, sound_peak, stat_clips

    cache, _ = avdigits_cache
    ds = ShardDataset(cache)
    assert ds.level_stats is not None
    peaks, background = ds.level_stats
    # in the shards' records, not in the manifest meant for people
    assert "level_background" in pq.read_schema(next((cache / "shards").glob("*.videos.parquet"))).names
    assert not {"level_peak", "level_background"} & set(pq.read_schema(cache / "manifest.parquet").names)
    assert peaks.dtype == background.dtype == np.float32 and background.shape == (len(ds.videos), ds.config.n_mels)
    first, counts = ds.videos["first_clip"].to_numpy(), ds.videos["n_clips"].to_numpy()
    audio = ds.read_audio(np.arange(len(ds)))
    assert peaks.tolist() == video_peaks(audio, torch.tensor(counts)).tolist()
    for v in range(len(counts)):
        x = audio[first[v]:first[v] + counts[v]].float()
        want = torch.nanquantile(x.permute(1, 0, 2).reshape(x.shape[1], -1), 0.5, dim=1)
        assert background[v].tobytes() == want.numpy().tobytes()

    # the median against torch's on float16 values, even and odd counts, padded bins among them
    rng = np.random.default_rng(0)
    for n, t in ((1, 1), (1, 6), (2, 7), (3, 40), (4, 33)):
        x = rng.normal(0.0, 4.0, (n, 5, t)).astype(np.float16)
        x[:, :2, : t // 2] = np.float16(EMPTY)
        want = torch.nanquantile(torch.from_numpy(x).float().permute(1, 0, 2).reshape(5, -1), 0.5, dim=1)
        assert band_medians(x).tobytes() == want.numpy().tobytes()
    assert sound_peak(np.full((2, 3, 4), EMPTY, np.float16)) == -math.inf
    assert sound_peak(np.zeros((0, 3, 4), np.float16)) == -math.inf
    # a long video: its statistics come from 32 clips, evenly spaced from the first to the last
    assert stat_clips(3).tolist() == [0, 1, 2]
    picks = stat_clips(100)
    assert len(picks) == 32 and picks[0] == 0 and picks[-1] == 99 and (np.diff(picks) >= 3).all()


def test_offsets_from_the_stored_statistics_are_the_measured_ones():
    """:func:`offsets_from_background` on the peaks and medians gives :func:`video_level_offsets`, bit for bit,
    with and without a gain, under two fixed floors."""
    from videolabel.data.levels import offsets_from_background
    from videolabel.ingest.levelstats import level_stats

    vids = _videos(3) + [v - 6.0 for v in _videos(4)]  # a quiet collection among them
    counts = torch.tensor([len(v) for v in vids])
    x = torch.cat(vids).half()
    stats = [level_stats(v.half().numpy()) for v in vids]
    peaks = torch.tensor([p for p, _ in stats], dtype=torch.float32)
    background = torch.tensor([b for _, b in stats], dtype=torch.float32)
    assert peaks.tolist() == video_peaks(x, counts).tolist()
    for floor in (0.0, -1.0):
        for gain in (0.0, collection_gain(peaks), 5.25):
            want = video_level_offsets(x, counts, floor, gain)
            assert offsets_from_background(peaks, background, floor, gain).numpy().tobytes() == want.numpy().tobytes()


def test_a_cache_ingested_before_the_statistics_were_stored(avdigits_cache, tmp_path):
    """Records without the statistics (a cache from before): the run measures them, the same table, and says so
    first; a record
    whose background has the wrong number of bands is a damaged cache, refused in one line."""
    import io
    import shutil

    import pyarrow.parquet as pq

    from videolabel.data.dataset import ShardDataset
    from videolabel.data.levels import MAX_CLIPS, measuring_notice
    from videolabel.errors import VideolabelError
    from videolabel.train.config import make_config
    from videolabel.train.loop import Trainer
    from videolabel.train.progress import TrainProgress

    cache, _ = avdigits_cache
    want = video_level_table(ShardDataset(cache), 0.0)
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    markers = sorted((old / "shards").glob("*.videos.parquet"))
    assert markers
    for m in markers:
        pq.write_table(pq.read_table(m).drop_columns(["level_peak", "level_background"]), m)
    ds = ShardDataset(old)
    assert ds.level_stats is None
    got = video_level_table(ds, 0.0)
    assert got[0].tobytes() == want[0].tobytes() and got[1] == want[1]

    # a run tells its user before it measures (on rank 0, through the progress's note), and only then
    clips = int(ds.videos["n_clips"].clip(upper=MAX_CLIPS).sum())
    for where, measured in ((old, True), (cache, False)):
        said: list[str] = []
        cfg = make_config(None, {"preset": "tiny", "num_clusters": 4, "num_heads": 1, "epochs": 1, "workers": 0,
                                 "progress": "none", "audio_level": "video"})
        Trainer(where, tmp_path / f"run-{measured}", cfg, device="cpu", say=said.append).close()
        assert said == ([measuring_notice(ds)] if measured else [])
    assert f"two passes over {clips:,} clips" in measuring_notice(ds) and "ingest --overwrite" in measuring_notice(ds)
    shown = io.StringIO()
    TrainProgress("log", stream=shown).note(measuring_notice(ds))
    TrainProgress("none", stream=shown).note("not shown")
    assert shown.getvalue() == measuring_notice(ds) + "\n"

    shutil.rmtree(old)
    shutil.copytree(cache, old)
    bad = [b[:-1] for b in pq.read_table(markers[0]).column("level_background").to_pylist()]
    t = pq.read_table(markers[0])
    t = t.set_column(t.schema.get_field_index("level_background"), "level_background", [bad])
    pq.write_table(t, markers[0])
    with pytest.raises(VideolabelError, match="damaged cache .*level_background"):
        ShardDataset(old)
