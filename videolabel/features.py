"""The pooled features of ``videolabel assign --features``: read them, and line them up with assignment rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from videolabel.errors import VideolabelError, first_line
from videolabel.groundtruth import norm_path
from videolabel.kmeans import l2_normalise

__all__ = ["FeatureTable", "align_features", "feature_positions", "features_from_frame", "load_features"]


@dataclass
class FeatureTable:
    """Pooled features of a ``--features`` Parquet: ids (video_id/path), video [n, Dv], audio [n, Da] or None."""

    ids: pd.DataFrame
    video: np.ndarray
    audio: np.ndarray | None

    def matrix(self, normalise: bool = True) -> np.ndarray:
        """Concatenated video+audio features; with ``normalise``, each part and the whole L2-normalised."""
        parts = [self.video] + ([self.audio] if self.audio is not None else [])
        if normalise:
            parts = [l2_normalise(x) for x in parts]
        m = np.concatenate(parts, axis=1).astype(np.float32)
        return l2_normalise(m) if normalise else m


def _list_column(table, name: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    n = len(col)
    if pa.types.is_fixed_size_list(col.type) and col.null_count == 0:
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, col.type.list_size)
    rows = col.to_pylist()
    d = max((len(r) for r in rows if r is not None), default=0)
    out = np.zeros((n, d), dtype=np.float32)
    for i, r in enumerate(rows):
        if r is not None:
            if len(r) != d:
                raise VideolabelError(f"features column {name} has rows of different lengths")
            out[i] = r
    return out


def load_features(path: str | Path) -> FeatureTable:
    """Read a features Parquet written by ``videolabel assign --features``."""
    p = Path(path)
    if not p.is_file():
        raise VideolabelError(f"features file not found: {p}")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001
        raise VideolabelError(f"cannot read features {p} as Parquet: {first_line(exc)}") from None
    if "video_features" not in table.column_names:
        raise VideolabelError(f"features file {p} lacks a video_features column (has: {', '.join(table.column_names)})")
    ids = pd.DataFrame({c: table.column(c).to_pandas().astype(str).to_numpy()
                        for c in ("video_id", "path") if c in table.column_names})
    if ids.empty and len(ids.columns) == 0:
        raise VideolabelError(f"features file {p} lacks an id column (video_id or path)")
    video = _list_column(table, "video_features")
    audio = _list_column(table, "audio_features") if "audio_features" in table.column_names else None
    if audio is not None and "has_audio" in table.column_names:
        audio[~table.column("has_audio").to_numpy(zero_copy_only=False).astype(bool)] = 0.0
    return FeatureTable(ids=ids, video=video, audio=audio)


def features_from_frame(df: pd.DataFrame) -> FeatureTable:
    """A :class:`FeatureTable` from a frame with id column(s) and list columns video_features[, audio_features]."""
    ids = df[[c for c in ("video_id", "path") if c in df.columns]].astype(str).reset_index(drop=True)
    video = np.stack([np.asarray(v, dtype=np.float32) for v in df["video_features"]])
    audio = (np.stack([np.asarray(v, dtype=np.float32) for v in df["audio_features"]])
             if "audio_features" in df.columns else None)
    return FeatureTable(ids=ids, video=video, audio=audio)


def feature_positions(df: pd.DataFrame, feats: FeatureTable) -> tuple[str, np.ndarray]:
    """The id column that ``df`` and ``feats`` share (video_id, else path) and, per row of ``df``, its row
    in ``feats`` (-1: none); duplicate ids in ``feats`` are refused."""
    key = next((c for c in ("video_id", "path") if c in df.columns and c in feats.ids.columns), None)
    if key is None:
        raise VideolabelError("features and assignments share no id column (video_id or path)")
    norm = norm_path if key == "path" else str
    index = pd.Index(feats.ids[key].map(norm))
    if index.duplicated().any():
        raise VideolabelError(f"features file has duplicate {key}(s), e.g. {index[index.duplicated()][0]}")
    return key, index.get_indexer(df[key].astype(str).map(norm))


def align_features(df: pd.DataFrame, feats: FeatureTable | np.ndarray | pd.DataFrame,
                   normalise: bool = True) -> np.ndarray:
    """Feature rows aligned to the rows of ``df`` (matched on video_id, else path)."""
    if isinstance(feats, pd.DataFrame):
        feats = features_from_frame(feats)
    if isinstance(feats, np.ndarray):
        if feats.ndim != 2 or len(feats) != len(df):
            raise VideolabelError(f"features array must be [n_videos={len(df)}, D], got shape {feats.shape}")
        return l2_normalise(feats) if normalise else feats.astype(np.float32)
    key, pos = feature_positions(df, feats)
    missing = pos < 0
    if missing.any():
        ex = ", ".join(map(str, df[key][missing].iloc[:3]))
        raise VideolabelError(f"{int(missing.sum())} video(s) of the assignments have no features, e.g. {ex}")
    return feats.matrix(normalise)[pos]
