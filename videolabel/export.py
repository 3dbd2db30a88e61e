"""Export assignments for browsing: a folder per cluster of symlinks (or copies), a features CSV, FiftyOne.

    from videolabel.export import export_tree, write_features_csv

    summary = export_tree(a.df, "videos/", "by_cluster/", copy=False, head=None)
    write_features_csv(a.df, load_features("f.parquet"), "features.csv")

``OUT/cluster_007/<file name>`` links to ``SOURCE_ROOT/<path>`` (absolute symlink target). Two
videos of one cluster with the same file name: the later ones (in row order) are named
``<video_id>_<file name>``. Missing source files are counted, listed (a few) and skipped.
Re-exporting into the same folder replaces the entries it writes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from videolabel.assignments import head_columns
from videolabel.errors import VideolabelError, first_line
from videolabel.fsutil import csv_text, write_user_file
from videolabel.groundtruth import source_file

__all__ = ["ExportSummary", "export_tree", "write_features_csv", "export_fiftyone", "cluster_column"]


@dataclass
class ExportSummary:
    out: str
    written: int = 0
    clusters: int = 0
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    renamed: int = 0
    copied: bool = False

    def lines(self) -> list[str]:
        how = "copied" if self.copied else "linked"
        lines = [f"{how} {self.written} videos into {self.clusters} cluster folders under {self.out}"]
        if self.renamed:
            lines.append(f"  {self.renamed} file name clash(es): prefixed with the video_id")
        if self.missing:
            lines.append(f"  {self.missing} source file(s) missing, skipped, e.g. {', '.join(self.missing_examples)}")
        return lines

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def cluster_column(df: pd.DataFrame, head: int | None) -> str:
    col = "cluster" if head is None else f"cluster_h{head}"
    if col not in df.columns:
        heads = [c for _, c in sorted(head_columns(df.columns).items())]
        raise VideolabelError(f"assignments have no {col} column (have: {', '.join(heads) or 'cluster'})")
    return col


def export_tree(df: pd.DataFrame, source_root: str | Path, out: str | Path, *, copy: bool = False,
                head: int | None = None, max_examples: int = 5) -> ExportSummary:
    """Write ``out/cluster_NNN/`` folders with a symlink (or copy) of every video."""
    root = Path(source_root)
    if not root.is_dir():
        raise VideolabelError(f"source root is not a folder: {root}")
    if "path" not in df.columns:
        raise VideolabelError("assignments lack a path column (needed to find the source files)")
    col = cluster_column(df, head)
    dest_root = Path(out)
    summary = ExportSummary(out=str(dest_root), copied=copy)
    used: dict[str, set[str]] = {}
    ids = df["video_id"].astype(str).to_numpy() if "video_id" in df.columns else None
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
        for i, (rel, c) in enumerate(zip(df["path"].astype(str).to_numpy(), df[col].to_numpy())):
            src = source_file(root, rel)
            if not src.is_file():
                summary.missing += 1
                if len(summary.missing_examples) < max_examples:
                    summary.missing_examples.append(rel)
                continue
            folder = f"cluster_{int(c):03d}"
            names = used.setdefault(folder, set())
            name = Path(rel).name
            if name in names:
                name = f"{ids[i] if ids is not None else i}_{name}"
                summary.renamed += 1
            names.add(name)
            d = dest_root / folder
            d.mkdir(exist_ok=True)
            dest = d / name
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if copy:
                shutil.copy2(src, dest)
            else:
                os.symlink(src.resolve(), dest)
            summary.written += 1
    except OSError as exc:
        raise VideolabelError(f"cannot export into {dest_root}: {exc.strerror or exc}") from None
    summary.clusters = len(used)
    return summary


def write_features_csv(df: pd.DataFrame, features, out: str | Path, *, head: int | None = None) -> Path:
    """CSV of video_id, path, cluster, f0..fD: the raw concatenated video+audio features per video."""
    from videolabel.features import align_features

    col = cluster_column(df, head)
    x = align_features(df, features, normalise=False)
    frame = pd.DataFrame({
        "video_id": df["video_id"].astype(str).map(csv_text).to_numpy() if "video_id" in df.columns else "",
        "path": df["path"].astype(str).map(csv_text).to_numpy() if "path" in df.columns else "",
        "cluster": df[col].to_numpy(),
    })  # (csv_text: a name like "=cmd|..." must not run in a spreadsheet)
    feats = pd.DataFrame(np.asarray(x, dtype=np.float32), columns=[f"f{j}" for j in range(x.shape[1])])
    frame = pd.concat([frame, feats], axis=1)
    return write_user_file(lambda p: frame.to_csv(p, index=False), out)


def export_fiftyone(df: pd.DataFrame, source_root: str | Path, name: str, *, head: int | None = None) -> int:
    """A persistent FiftyOne dataset ``name``: one sample per video whose source file exists, with a
    ``cluster`` classification (the chosen head, or ``head``; its confidence), a ``cluster_h<h>``
    classification per head (confidence ``prob_h<h>``) and the ``video_id`` (optional dependency:
    ``pip install fiftyone``). Returns the number of samples. An existing dataset of that name is an
    error (it is never overwritten)."""
    try:
        import fiftyone as fo
    except Exception:  # noqa: BLE001 - missing or broken install
        raise VideolabelError("--fiftyone needs the fiftyone package, which is not installed "
                              "(pip install fiftyone)") from None
    col = cluster_column(df, head)
    heads = sorted(head_columns(df.columns))
    root = Path(source_root).resolve()
    if not root.is_dir():
        raise VideolabelError(f"source root is not a folder: {source_root}")
    conf_col = "confidence" if head is None else f"prob_h{head}"
    conf = df[conf_col].to_numpy() if conf_col in df.columns else None
    ids = df["video_id"].astype(str).to_numpy() if "video_id" in df.columns else None
    try:
        if fo.dataset_exists(name):
            raise VideolabelError(f"FiftyOne dataset {name!r} already exists: pick another name, or delete it "
                                  f"(fiftyone datasets delete {name})")
    except VideolabelError:
        raise
    except Exception as exc:  # noqa: BLE001 - its database did not start, or could not be reached
        raise VideolabelError(f"FiftyOne cannot open its database: {first_line(exc)}") from None
    samples = []
    for i, rel in enumerate(df["path"].astype(str)):
        src = source_file(root, rel)
        if not src.is_file():
            continue
        s = fo.Sample(filepath=str(src))
        s["cluster"] = fo.Classification(label=f"cluster_{int(df[col].iloc[i]):03d}",
                                         confidence=float(conf[i]) if conf is not None else None)
        for h in heads:
            p = df[f"prob_h{h}"].iloc[i] if f"prob_h{h}" in df.columns else None
            s[f"cluster_h{h}"] = fo.Classification(label=f"cluster_{int(df[f'cluster_h{h}'].iloc[i]):03d}",
                                                   confidence=float(p) if p is not None else None)
        if ids is not None:
            s["video_id"] = ids[i]
        samples.append(s)
    dataset = fo.Dataset(name)
    dataset.persistent = True
    dataset.add_samples(samples)
    return len(samples)
