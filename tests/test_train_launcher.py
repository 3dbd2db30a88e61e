"""train/launcher.py: ``--nproc N`` starts torchrun with the same arguments, minus ``--nproc``.

The real multi-process run under gloo goes through the launcher in test_assign.py
(``videolabel assign --nproc 2``); here: the command line, the environment, exit codes of real children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from videolabel.errors import VideolabelError
from videolabel.train import launcher
from videolabel.train.launcher import launch, strip_nproc

REPO = Path(__file__).resolve().parents[1]


def test_strip_nproc_removes_both_spellings_and_only_them() -> None:
    argv = ["train", "C", "--nproc", "2", "--out", "R", "--nproc=3", "--nprocx", "4", "--set", "nproc=1"]
    assert strip_nproc(argv) == ["train", "C", "--out", "R", "--nprocx", "4", "--set", "nproc=1"]
    assert strip_nproc(["--nproc"]) == []  # a trailing flag without its value: nothing left to pass on
    assert strip_nproc([]) == []


def test_launch_command_and_threads(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(launcher.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 7)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launcher.os, "cpu_count", lambda: 8)
    assert launch(3, ["assign", "RUN", "--nproc", "3", "--out", "a.parquet"]) == 7  # torchrun's exit code
    cmd, env = calls[0]
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
                   "-m", "videolabel", "assign", "RUN", "--out", "a.parquet"]
    assert env["OMP_NUM_THREADS"] == "2"  # 8 CPUs // 3 processes
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    launch(16, ["train"])
    assert calls[1][1]["OMP_NUM_THREADS"] == "5"  # the user's setting wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    launch(16, ["train"])
    assert calls[2][1]["OMP_NUM_THREADS"] == "1"  # never 0


def test_launch_refuses_no_processes() -> None:
    with pytest.raises(VideolabelError, match="--nproc must be >= 1"):
        launch(0, ["train"])


def test_real_children_report_their_exit_code(tmp_path) -> None:
    """Two real processes under torchrun: success is 0, a failing command is not."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = ("import sys; from videolabel.train.launcher import launch; "
            "sys.exit(launch(2, sys.argv[1:]))")
    ok = subprocess.run([sys.executable, "-c", code, "--version", "--nproc", "2"], capture_output=True, text=True,
                        env=env, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.count("videolabel ") == 2  # one line per process
    bad = subprocess.run([sys.executable, "-c", code, "no-such-command"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode != 0
