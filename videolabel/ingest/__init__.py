"""Ingest: source videos -> cache of clips (shards + manifest). See docs/architecture.md.

``from videolabel.ingest import run_ingest`` (imported lazily, so that light modules such as
``videolabel.ingest.logmel`` can be used without the driver's dependencies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["IngestSummary", "run_ingest"]

if TYPE_CHECKING:  # pragma: no cover
    from videolabel.ingest.driver import IngestSummary, run_ingest


def __getattr__(name: str) -> Any:
    if name in __all__:
        from videolabel.ingest import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'videolabel.ingest' has no attribute {name!r}")
