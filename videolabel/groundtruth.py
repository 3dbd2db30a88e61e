"""Ground-truth label files (``path,label`` CSV): read, validate and join to a cache's videos.

Used for monitoring during training (never for learning) and by ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from videolabel.errors import VideolabelError, first_line
from videolabel.fsutil import csv_untext


def read_ground_truth(path: str | Path, *, key: str = "path", label: str = "label") -> pd.DataFrame:
    """Read a CSV (or Parquet) of ground truth with columns ``key`` and ``label``; one row per key."""
    p = Path(path)
    if not p.is_file():
        raise VideolabelError(f"ground-truth file not found: {p}")
    try:
        if p.suffix != ".parquet":
            _check_rectangular(p)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype={key: str, label: str})
    except VideolabelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-facing error
        raise VideolabelError(f"cannot read ground truth {p}: {first_line(exc)}") from None
    if df.empty:
        raise VideolabelError(f"ground-truth file {p} has no rows")
    missing = [c for c in (key, label) if c not in df.columns]
    if missing:
        raise VideolabelError(
            f"ground-truth file {p} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )
    df = df[[key, label] + [c for c in df.columns if c not in (key, label)]].copy()
    empty = df[key].isna() | (df[key].astype(str).str.strip() == "")
    if empty.any():
        raise VideolabelError(f"ground-truth file {p}: {int(empty.sum())} row(s) without a {key}, "
                              f"e.g. data row {int(empty.to_numpy().argmax()) + 1}")
    df[key] = df[key].astype(str).map(csv_untext)
    df[label] = df[label].map(lambda v: csv_untext(v) if isinstance(v, str) else v)
    df[key] = df[key].map(norm_path) if key == "path" else df[key]
    dup = df[key].duplicated()
    if dup.any():
        raise VideolabelError(f"ground-truth file {p} has {int(dup.sum())} duplicate {key}(s), "
                              f"e.g. {df[key][dup].iloc[0]}")
    return df


def _check_rectangular(path: Path) -> None:
    """Refuse a CSV whose rows do not all have the header's number of fields (pandas would shift such
    rows into an index, or fill them with NaN, and the error would come out as "duplicate paths")."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            return
        for row in rows:
            if row and len(row) != len(header):
                raise VideolabelError(f"ground-truth file {path}: line {rows.line_num} has {len(row)} field(s), "
                                      f"the header has {len(header)} ({', '.join(header)})")


def norm_path(path: object) -> str:
    """A relative video path as a key: POSIX separators, no leading ``./``."""
    return str(path).replace("\\", "/").removeprefix("./")


def source_file(root: str | Path, rel: object) -> Path:
    r"""The file of a video path under ``root``: the path as it is (on POSIX a backslash is a character of
    a file name, not a separator); only when no such file exists, the path with ``\`` read as ``/``."""
    rel = str(rel).removeprefix("./")
    path = Path(root) / rel
    if "\\" in rel and not path.exists():
        alt = Path(root) / norm_path(rel)
        if alt.exists():
            return alt
    return path


def join_ground_truth(
    keys: pd.Series, gt: pd.DataFrame, *, key: str = "path", label: str = "label", gt_key: str | None = None
) -> tuple[pd.Series, pd.Series]:
    """Ground-truth labels aligned to ``keys`` (NaN where unmatched) and the gt keys left unmatched.

    ``key`` names what ``keys`` hold (``path`` keys are compared with POSIX separators and without a
    leading ``./``); ``gt_key`` is the column of ``gt`` to compare them with (default: ``key``).
    """
    k = keys.astype(str).map(norm_path) if key == "path" else keys.astype(str)
    if gt_key is None or gt_key == key:
        mapping = gt.set_index(key)[label]
        aligned = k.map(mapping)
        unmatched = gt[key][~gt[key].isin(set(k))]
        return aligned, unmatched
    g = gt[gt_key].astype(str)
    if key == "path":
        g = g.map(norm_path)
    mapping = pd.Series(gt[label].to_numpy(), index=g.to_numpy())
    aligned = k.map(mapping)
    unmatched = gt[gt_key][~g.isin(set(k))]
    return aligned, unmatched
