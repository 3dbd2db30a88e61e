"""The assignment file: one Parquet format, written by ``videolabel assign``, read by everything after it.

Wide layout (one row per video): ``video_id, path, cluster, confidence, margin, cluster_h<h>, prob_h<h>``
(every head), ``has_audio, av_agree, av_mismatch, audio_db, silent, sound_flag``; long layout (one row
per video and head): ``video_id, path, head, cluster, prob``. Other producers may write just
``video_id`` and/or ``path`` and ``cluster`` (or ``cluster_h<h>``). The Parquet key-value metadata
under :data:`META_KEY` is a JSON object (run, checkpoint, method, modality, layout, head, name, ...;
docs/architecture.md "Assignments").

:func:`write_assignments` writes a table with its metadata atomically; :func:`load_assignments` reads
either layout back into wide form (:class:`Assignments`), checked, with one-line errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from videolabel.errors import VideolabelError, first_line
from videolabel.fsutil import write_parquet_atomic, write_user_file

__all__ = ["KEYS", "LAYOUTS", "META_KEY", "Assignments", "assignments_from_frame", "head_columns",
           "load_assignments", "write_assignments"]


#: the Parquet key-value metadata key under which the JSON metadata is stored
META_KEY = b"videolabel"
#: the id columns an assignment table may be joined on
KEYS = ("path", "video_id")
#: the layouts :func:`write_assignments` writes and :func:`load_assignments` reads
LAYOUTS = ("wide", "long")
_HEAD_COL = re.compile(r"^cluster_h(\d+)$")


def head_columns(columns: Iterable[object]) -> dict[int, str]:
    """``{h: "cluster_h<h>"}`` for every per-head cluster column among ``columns``."""
    return {int(m.group(1)): str(c) for c in columns if (m := _HEAD_COL.match(str(c)))}


# --- writing ---------------------------------------------------------------------------


def write_assignments(df: pd.DataFrame, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write an assignment table and its metadata (JSON under :data:`META_KEY`) to ``out`` atomically.

    The folder is created; an OS error is a one-line :class:`~videolabel.errors.VideolabelError`.
    """
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[META_KEY] = json.dumps(meta).encode()
    return write_user_file(lambda p: write_parquet_atomic(table.replace_schema_metadata(md), p), out)


# --- reading ---------------------------------------------------------------------------


@dataclass
class Assignments:
    """An assignment file in wide form.

    df:    one row per video: ``video_id`` and/or ``path``, ``cluster`` (the chosen head) and
           ``cluster_h{h}`` for every head h in ``heads`` (plus whatever else the file held,
           e.g. ``prob_h{h}``, ``confidence``).
    heads: the head indices, sorted.
    meta:  the Parquet key-value metadata under ``videolabel`` (JSON), ``{}`` when absent.
    name:  a short label for tables: ``meta["name"]``, else ``meta["method"]``, else the file stem.
    """

    df: pd.DataFrame
    heads: list[int]
    meta: dict
    name: str
    path: Path | None = None

    @property
    def chosen_head(self) -> int:
        """The label-free head: the file's ``head`` metadata, else 0 (else the first head)."""
        head = self.meta.get("head")
        if head is not None:
            try:
                return int(head)
            except (TypeError, ValueError):
                pass
        return 0 if (0 in self.heads or not self.heads) else self.heads[0]

    @property
    def chosen_is_meta(self) -> bool:
        return self.meta.get("head") is not None


def load_assignments(path: str | Path) -> Assignments:
    """Read an assignment Parquet file (wide or long layout) into wide form, with its metadata."""
    p = Path(path)
    if not p.exists():
        raise VideolabelError(f"assignments file not found: {p}")
    if not p.is_file():
        raise VideolabelError(f"assignments path is not a file: {p}")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001 - any read failure is a user-facing error
        raise VideolabelError(f"cannot read assignments {p} as Parquet: {first_line(exc)}") from None
    meta: dict = {}
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw:
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise VideolabelError(f"assignments {p} have unreadable '{META_KEY.decode()}' metadata "
                                  "(not JSON)") from None
        if not isinstance(meta, dict):
            raise VideolabelError(f"assignments {p} have '{META_KEY.decode()}' metadata that is not a JSON object")
    if table.num_rows == 0:
        raise VideolabelError(f"assignments file {p} has no rows")
    return assignments_from_frame(table.to_pandas(), meta, source=p)


def assignments_from_frame(
    df: pd.DataFrame, meta: dict | None = None, *, name: str | None = None, source: str | Path | None = None
) -> Assignments:
    """Validate an assignment frame (wide or long layout) and return it in wide form."""
    meta = dict(meta or {})
    src = Path(source) if source is not None else None
    where = f"assignments {src}" if src is not None else "assignments"
    if len(df) == 0:
        raise VideolabelError(f"{where} have no rows")
    cols = [str(c) for c in df.columns]
    df = df.copy()
    df.columns = cols
    ids: list[str] = [c for c in ("video_id", "path") if c in cols]
    if not ids:
        raise VideolabelError(f"{where} lack an id column: need video_id or path (has: {', '.join(cols)})")
    head_cols = head_columns(cols)
    long = meta.get("layout") == "long" or ("head" in cols and not head_cols)
    if long:
        missing = [c for c in ("head", "cluster") if c not in cols]
        if missing:
            raise VideolabelError(
                f"{where} (long layout) lack column(s) {', '.join(missing)} (has: {', '.join(cols)})"
            )
        df = _long_to_wide(df, ids, where)
        cols = list(df.columns)
        head_cols = head_columns(cols)
    if "cluster" not in cols and not head_cols:
        raise VideolabelError(
            f"{where} lack cluster column(s): need cluster or cluster_h0, cluster_h1, ... (has: {', '.join(cols)})"
        )
    a = Assignments(df=df, heads=sorted(head_cols), meta=meta, name="", path=src)
    chosen = a.chosen_head
    if not head_cols:  # a producer with just one labelling (``cluster``)
        df[f"cluster_h{chosen}"] = df["cluster"]
        a.heads = [chosen]
    elif "cluster" not in cols:
        if chosen not in head_cols:
            raise VideolabelError(
                f"{where}: metadata head {chosen} has no cluster_h{chosen} column "
                f"(heads: {', '.join(map(str, sorted(head_cols)))})"
            )
        df["cluster"] = df[f"cluster_h{chosen}"]
    for c in ["cluster"] + [f"cluster_h{h}" for h in a.heads]:
        nulls = int(df[c].isna().sum())
        if nulls:
            raise VideolabelError(f"{where}: column {c} has {nulls} missing value(s)")
    for c in ids:
        dup = df[c].duplicated()
        if dup.any():
            raise VideolabelError(f"{where} have {int(dup.sum())} duplicate {c}(s), e.g. {df[c][dup].iloc[0]}")
    a.name = name or str(meta.get("name") or meta.get("method") or (src.stem if src is not None else "assignments"))
    return a


def _long_to_wide(df: pd.DataFrame, ids: list[str], where: str) -> pd.DataFrame:
    key = ids[0]
    if df["head"].isna().any():
        raise VideolabelError(f"{where} (long layout): column head has missing values")
    try:
        heads = df["head"].astype(np.int64)
    except (TypeError, ValueError):
        raise VideolabelError(f"{where} (long layout): column head is not integer") from None
    df = df.assign(head=heads)
    dup = df.duplicated([key, "head"])
    if dup.any():
        row = df[dup].iloc[0]
        raise VideolabelError(
            f"{where} (long layout) have {int(dup.sum())} duplicate ({key}, head) row(s), "
            f"e.g. ({row[key]}, {row['head']})"
        )
    first = df.drop_duplicates(key)
    wide = first[ids].reset_index(drop=True)
    order = pd.Index(wide[key])
    values = [c for c in ("cluster", "prob") if c in df.columns]
    for h in sorted(df["head"].unique().tolist()):
        sub = df[df["head"] == h].set_index(key)
        missing = ~order.isin(sub.index)
        if missing.any():
            raise VideolabelError(
                f"{where} (long layout): {int(missing.sum())} video(s) lack a row for head {h}, "
                f"e.g. {order[missing][0]}"
            )
        for v in values:
            col = sub[v].reindex(order)
            wide[f"{v}_h{h}"] = col.to_numpy()
    return wide
