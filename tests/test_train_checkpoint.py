"""Checkpoints: the atomic save leaves nothing behind on error; the format and keys are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videolabel.errors import VideolabelError
from videolabel.train import checkpoint as C


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / C.LAST
    C.save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        C.save_checkpoint({"step": 4, "bad": Unsaveable()}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [C.LAST]  # no .tmp file left
    assert torch.load(path, weights_only=True)["step"] == 3  # the previous checkpoint is intact


def test_format_is_checked(tmp_path: Path) -> None:
    state = {"model": {"w": torch.ones(1)}, "train_config": {}, "ingest_config": {}, "ingest_hash": "x"}
    for fmt in (C.CHECKPOINT_FORMAT, None):
        doc = dict(state) if fmt is None else {**state, "format": fmt}
        C.save_checkpoint(doc, tmp_path / "ok.pt")
        C.load_checkpoint(tmp_path / "ok.pt", need=C.ASSIGN_KEYS)  # current format, or none recorded
    C.save_checkpoint({**state, "format": C.CHECKPOINT_FORMAT + 1}, tmp_path / "new.pt")
    with pytest.raises(VideolabelError, match="checkpoint format 2"):
        C.load_checkpoint(tmp_path / "new.pt", need=C.ASSIGN_KEYS)


def test_find_checkpoint_prefers_the_final_model(tmp_path: Path) -> None:
    with pytest.raises(VideolabelError, match="no checkpoint"):
        C.find_checkpoint(tmp_path)
    (tmp_path / C.LAST).write_bytes(b"")
    assert C.find_checkpoint(tmp_path).name == C.LAST
    (tmp_path / C.FINAL).write_bytes(b"")
    assert C.find_checkpoint(tmp_path).name == C.FINAL
