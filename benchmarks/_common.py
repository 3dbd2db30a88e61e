"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

#: the AV-Digits builder, which the benchmarks load by path
BUILD_PY = Path(__file__).resolve().parents[1] / "examples" / "avdigits" / "build.py"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_builder() -> ModuleType:
    """``examples/avdigits/build.py`` loaded by path, once (registered, so its process pool can pickle)."""
    name = "avdigits_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BUILD_PY)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the repository
        raise SystemExit(f"cannot load {BUILD_PY}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def label_free_heads(a: Any) -> tuple[int, int]:
    """(the head ``--head agreement`` would choose, the head ``--head consensus`` would choose) of one
    SeLaVi assignment file (``videolabel.assignments.Assignments``), read from the file alone: the highest
    stored frames-vs-audio NMI (the file's own head where none is stored), and the medoid of its per-head
    clusters."""
    import numpy as np

    from videolabel.cluster.select import consensus_head

    agreement = a.meta.get("head_av_nmi")
    h_agree = a.heads[int(np.argmax(agreement))] if agreement else a.chosen_head
    h_cons = a.heads[consensus_head(np.stack([a.df[f"cluster_h{h}"].to_numpy() for h in a.heads]))]
    return h_agree, h_cons


def parse_settings(items: list[str] | None, prog: str) -> dict[str, str]:
    """``--set KEY=VALUE`` items as training settings (:func:`videolabel.train.config.parse_settings`, what
    ``videolabel train --set`` takes); a bad item ends the benchmark with a one-line error."""
    from videolabel.errors import VideolabelError
    from videolabel.train.config import parse_settings as parse

    try:
        return parse(items or [])
    except VideolabelError as exc:
        raise SystemExit(f"{prog}: {exc}") from None


def settings_tag(settings: dict[str, str]) -> str:
    """A run-name suffix for non-default settings (empty without them, so earlier runs keep their names)."""
    return "".join(f"-{k}={v}".replace("/", "_") for k, v in sorted(settings.items()))


def finished_run(run_dir: Path, cfg: Any, prog: str) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (a ``TrainConfig``), to reuse instead of training.

    A run's folder is named by the benchmark's flags, not by every setting they resolve to: when a default
    changes (the ``tiny`` recipe's, say), a folder of before holds a run of other settings. Reusing it would
    report the old recipe under the new one's name, so such a folder ends the benchmark with a one-line
    error naming the settings that differ (the check ``train --resume`` makes)."""
    import json

    from videolabel.train.checkpoint import FINAL
    from videolabel.train.config import diff_configs

    if not (run_dir / FINAL).is_file():
        return False
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise SystemExit(f"{prog}: {run_dir} holds a finished run without a readable config.json: "
                         "remove it or give another --out") from None
    diffs = diff_configs(saved, cfg)
    if diffs:
        raise SystemExit(f"{prog}: {run_dir} holds a run of other settings ({'; '.join(diffs)}): remove it or "
                         "give another --out")
    return True
