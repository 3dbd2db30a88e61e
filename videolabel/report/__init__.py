"""``videolabel report``: a self-contained static HTML site to browse the clusters of an assignment file.

See :func:`videolabel.report.build.build_report`.
"""

from videolabel.report.build import build_report

__all__ = ["build_report"]
