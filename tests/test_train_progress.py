"""train/progress.py: the training progress reporter (log lines, the rich bar, none)."""

from __future__ import annotations

import io

from videolabel.train.progress import PROGRESS_MODES, TrainProgress

ROW = {"loss": 1.23456, "clips_per_s": 12.34, "data_wait": 0.125, "lr": 0.002, "epoch": 1.5}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines() -> None:
    out = io.StringIO()
    p = TrainProgress("log", stream=out)
    p.start(10, 4, solves=3)
    p.update(6, ROW)
    p.stop()
    assert out.getvalue().splitlines() == [
        "train: 4/10 steps, 3 label solves",
        "train: step 6/10 epoch 1.50  loss 1.235  12.3 clips/s  data_wait 12%  lr 0.002",
    ]
    bare = io.StringIO()
    TrainProgress("log", stream=bare).start(10, 0)
    assert bare.getvalue() == "train: 0/10 steps\n"


def test_auto_is_rich_on_a_terminal_else_log() -> None:
    assert TrainProgress("auto", stream=io.StringIO()).mode == "log"
    assert TrainProgress("auto", stream=Tty()).mode == "rich"
    assert set(PROGRESS_MODES) == {"auto", "rich", "log", "none"}


def test_rich_bar_and_none() -> None:
    out = Tty()
    p = TrainProgress("rich", stream=out)
    p.start(10, 0, solves=4)
    assert "4 label solves" in out.getvalue()
    p.update(10, ROW)
    p.stop()
    p.stop()  # twice is fine
    text = out.getvalue()
    assert "train" in text and "10/10" in text and "loss 1.235" in text
    quiet = io.StringIO()
    q = TrainProgress("none", stream=quiet)
    q.start(10, 0)
    q.update(5, ROW)
    q.stop()
    assert quiet.getvalue() == ""
