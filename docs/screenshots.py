"""Screenshots of a report for the README: the index, a cluster page (one thumbnail pinned) and the map.

    python docs/screenshots.py --demo demo [--out docs/images]     # after `make demo`
    python docs/screenshots.py --site SITE [--out docs/images]     # any report folder

``--demo DIR`` (the folder ``make demo`` fills) runs ``videolabel assign DIR/run --features`` and
``videolabel report`` (with ``--gt`` and ``--source-root`` from DIR/avdigits) into DIR/report first.
``--site`` takes a folder ``videolabel report`` wrote (with ``--features`` for the map). Needs Debian's
headless Chromium (``apt-get install chromium``), driven through the DevTools protocol
(``tests/chromium.py``). Writes ``report-index.png``, ``report-cluster.png`` and ``report-map.png``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from chromium import Chromium  # noqa: E402


def _save(png: bytes, out: Path, width: int) -> None:
    """Write a screenshot as a small PNG: scaled down to at most ``width`` pixels, 256 colours (octree:
    keeps the few saturated colours of the map's dots apart)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {img.width}x{img.height})")


def _report_of_demo(demo: Path) -> Path:
    import subprocess

    def vl(*a) -> None:
        cmd = [sys.executable, "-m", "videolabel", *map(str, a)]
        print("$ videolabel " + " ".join(map(str, a)))
        subprocess.run(cmd, check=True, cwd=REPO)

    if not (demo / "run").is_dir():
        raise SystemExit(f"{demo}/run not found: run `make demo` first")
    vl("assign", demo / "run", "--out", demo / "selavi.parquet", "--workers", "0",
       "--features", demo / "features.parquet")
    vl("report", demo / "selavi.parquet", "--cache", demo / "cache", "--out", demo / "report", "--gt",
       demo / "avdigits" / "labels.csv", "--features", demo / "features.parquet", "--source-root",
       demo / "avdigits" / "videos")
    return demo / "report"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--site", type=Path, help="report folder (index.html inside)")
    src.add_argument("--demo", type=Path, help="the `make demo` folder: assign --features and report first")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--cluster", default=None, help="cluster page to show (default: the first)")
    ap.add_argument("--width", type=int, default=1000, help="width of the saved PNGs (pixels)")
    args = ap.parse_args(argv)
    if args.demo is not None:
        args.site = _report_of_demo(args.demo)
    index = args.site.resolve() / "index.html"
    if not index.is_file():
        ap.error(f"no index.html in {args.site}")
    args.out.mkdir(parents=True, exist_ok=True)
    with Chromium(width=1280, height=860) as b:
        b.open(index.as_uri())
        b.eval("document.fonts.ready.then(function(){ return 1; })")
        # the index with its two purest clusters named in the form, after their majority label
        rows = b.eval("""(function(){
            var ths = Array.prototype.map.call(document.querySelectorAll('#clusters th'),
                                               function(t){ return t.textContent; });
            var lab = ths.indexOf('majority label'), pur = ths.indexOf('purity');
            return Array.prototype.map.call(document.querySelectorAll('#clusters tbody tr'), function(r){
              return [r.querySelector('input.name').getAttribute('data-cluster'),
                      lab < 0 ? '' : r.cells[lab].textContent,
                      pur < 0 ? 0 : parseFloat(r.cells[pur].textContent) || 0]; });
        })()""")
        rows.sort(key=lambda r: -r[2])
        for k, (c, label, _) in enumerate(rows[:2]):
            b.type_into(f"input.name[data-cluster='{c}']", f"digit {label}" if label else f"group {k + 1}")
        b.eval("window.scrollTo(0, 0)")
        _save(b.screenshot(), args.out / "report-index.png", args.width)
        # the map
        _save(b.screenshot(selector="#map"), args.out / "report-map.png", args.width)
        # a cluster page, one thumbnail pinned in the viewer
        page = args.cluster or b.eval("document.querySelector('a[href^=\"cluster_\"]').getAttribute('href')")
        b.open((index.parent / page).as_uri())
        b.click(".grid .card:nth-child(2)")
        b.eval("window.scrollTo(0, 0)")
        _save(b.screenshot(), args.out / "report-cluster.png", args.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
