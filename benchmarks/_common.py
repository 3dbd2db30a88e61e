"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path
from types import ModuleType

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
