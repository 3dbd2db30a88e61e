"""ShardDataset: random access equals what was written, batched path, pickling, DataLoader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import make_set

from videolabel.config import IngestConfig
from videolabel.data.dataset import ShardDataset
from videolabel.errors import VideolabelError
from videolabel.ingest import run_ingest


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("ds")
    src = base / "src"
    make_set(src, 9, seconds=1.5)
    (src / "broken.mp4").write_text("not a video")
    got = {}

    def keep(res):
        if res.status == "ok":
            got[res.source.video_id] = (res.video.copy(), res.audio.copy(), res.source.rel)

    cfg = IngestConfig(clips_per_video=2, height=64, width=80)
    run_ingest(src, base / "cache", cfg, workers=2, shard_size=3, progress="none", on_result=keep)
    return base / "cache", got, cfg


def test_random_access_equals_what_was_written(written) -> None:
    cache, got, cfg = written
    ds = ShardDataset(cache)
    assert ds.config == cfg
    assert list(ds.videos.columns) == ["video_id", "path", "has_audio", "n_clips", "first_clip"]
    assert ds.videos.index.name == "video_index"
    assert list(ds.videos["video_id"]) == sorted(got)  # ok videos only, sorted by id
    assert len(ds) == sum(v[0].shape[0] for v in got.values())
    assert ds.clip_video.dtype == np.int64 and len(ds.clip_video) == len(ds)
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(ds)):
        item = ds[int(i)]
        v = int(item["video_index"])
        row = ds.videos.iloc[v]
        video, audio, rel = got[row["video_id"]]
        k = int(item["clip"])
        assert int(i) == row["first_clip"] + k and ds.clip_video[i] == v and row["path"] == rel
        assert item["video"].dtype == torch.uint8 and item["video"].shape == (30, 64, 80, 3)
        assert item["audio"].dtype == torch.float16 and item["audio"].shape == (257, 199)
        assert np.array_equal(item["video"].numpy(), video[k])
        assert np.array_equal(item["audio"].numpy(), audio[k])
    assert torch.equal(ds[-1]["video"], ds[len(ds) - 1]["video"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_getitems_equals_getitem(written) -> None:
    ds = ShardDataset(written[0])
    idx = [5, 0, len(ds) - 1, 5, 7, 2]
    batch = ds.__getitems__(idx)
    assert batch["video"].shape == (6, 30, 64, 80, 3) and batch["audio"].shape == (6, 257, 199)
    for j, i in enumerate(idx):
        one = ds[i]
        for key in ("video", "audio", "index", "video_index", "clip"):
            assert torch.equal(batch[key][j], one[key]), key


def test_pickles_and_dataloader_with_workers(written) -> None:
    ds = ShardDataset(written[0])
    ds[0]  # open some maps: they must not travel
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["video"], ds[3]["video"])
    dl = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2,
                                     collate_fn=ShardDataset.collate, generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in dl:
        assert batch["video"].shape[1:] == (30, 64, 80, 3)
        for j, i in enumerate(batch["index"].tolist()):
            assert torch.equal(batch["audio"][j], ds[i]["audio"])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(ds)))


def test_not_a_cache(tmp_path) -> None:
    with pytest.raises(VideolabelError, match="cache not found"):
        ShardDataset(tmp_path / "nope")
    with pytest.raises(VideolabelError, match="not a videolabel cache"):
        ShardDataset(tmp_path)
