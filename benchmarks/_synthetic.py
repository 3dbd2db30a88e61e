"""A cache of random clips written with the real shard writer (for throughput benchmarks only).

The read path of such a cache is exactly that of an ingested one; only the pixel values are random.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from videolabel.config import IngestConfig
from videolabel.ingest.manifest import ensure_config, read_records, write_manifests
from videolabel.ingest.shards import ShardWriter


def make_synthetic_cache(out: str | Path, n_videos: int, config: IngestConfig, *, shard_size: int = 64,
                         seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_config(out, config, "synthetic")
    rng = np.random.default_rng(seed)
    writer = ShardWriter(out, (0, 1), frames=config.frames, height=config.height, width=config.width,
                         n_mels=config.n_mels, mel_frames=config.mel_frames)
    c = config.clips_per_video
    for i in range(n_videos):
        path = f"synthetic/{i:07d}.mp4"
        vid = hashlib.sha1(path.encode()).hexdigest()[:16]
        video = rng.integers(0, 256, size=(c, config.frames, config.height, config.width, 3), dtype=np.uint8)
        audio = rng.normal(-5, 3, size=(c, config.n_mels, config.mel_frames)).astype(np.float16)
        record = {"video_id": vid, "path": path, "size_bytes": 0, "duration": 10.0, "fps": config.fps,
                  "width": config.width, "height": config.height, "video_codec": "synthetic",
                  "audio_codec": "synthetic", "has_audio": True, "n_clips": c, "status": "ok", "error": None}
        starts = [k * 10.0 / c for k in range(c)]
        writer.add(record, video, audio, starts, starts)
        if writer.pending >= shard_size:
            writer.flush()
    writer.flush()
    write_manifests(out, read_records(out), (0, 1))
    return out
