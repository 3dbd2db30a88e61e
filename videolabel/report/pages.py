"""The report's pages: the index (cluster table, map, naming form) and a page per cluster, as HTML text.

Every text that comes from file names, paths or labels is escaped here; the CSS and the little
vanilla JS (column sorting, the naming form, the thumbnail viewer) are inline.
"""

from __future__ import annotations

import json
import math
from html import escape

import numpy as np
import pandas as pd

from videolabel.report import projection as P

__all__ = ["MAP_POINTS", "bar", "cluster_file", "cluster_page", "fmt", "index_page", "json_script", "map_section",
           "num", "page"]

CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h2{margin-top:1.4em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:right;vertical-align:middle}
th{background:#eee;cursor:pointer;user-select:none}
th.nosort{cursor:default}
td.l,th.l{text-align:left}
.na{color:#a00;font-size:.9em}
.note{color:#555;font-size:.9em;max-width:60em}
.path{font-family:monospace;word-break:break-all}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.35em;vertical-align:baseline}
.strip{display:flex;gap:2px}
.strip img{height:40px;width:auto;image-rendering:pixelated;display:block}
.bar{display:inline-block;width:4em;height:.7em;background:#eee;margin-right:.4em;vertical-align:middle}
.bar span{display:block;height:100%;background:#4a7ab5}
.bar.av span{background:#3c9a5f}
td.num{white-space:nowrap}
input.name{width:8em}
td.cl{white-space:nowrap}
#naming{margin:.8em 0;padding:.6em;background:#fff;border:1px solid #ccc;max-width:60em}
.maps{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.maps figure{margin:0}
svg.map{max-width:100%;height:auto}
svg.map a circle:hover{stroke:#000;stroke-width:1.5}
.legend{font-size:.85em;max-width:420px;columns:3}
.legend a,.legend span.lab{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;color:inherit}
.layout{display:flex;gap:1em;align-items:flex-start}
.layout>main{flex:1;min-width:0}
#viewer{position:sticky;top:.6em;width:420px;flex:none;background:#fff;border:1px solid #ccc;padding:.6em;
  max-height:calc(100vh - 2em);overflow:auto;font-size:.9em}
#viewer img{display:block;image-rendering:pixelated;margin-bottom:.3em;max-width:100%}
#viewer audio{width:100%}
@media (max-width:900px){.layout{display:block}#viewer{position:fixed;left:0;right:0;bottom:0;top:auto;width:auto;
  max-height:45vh;z-index:5}}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px}
.card{background:#fff;border:2px solid #ccc;padding:3px;margin:0;cursor:pointer;outline:none}
.card.outlier{border-color:#e0b0b0;background:#fff8f8}
.card:hover,.card:focus{border-color:#4a7ab5}
.card.pinned{border-color:#d62728}
.card img.thumb{display:block;width:100%;height:auto;image-rendering:pixelated}
.card figcaption{font-size:.8em;padding-top:2px}
.card .conf{display:block;height:4px;background:#eee;margin-top:2px}
.card .conf span{display:block;height:100%;background:#4a7ab5}
.card .detail{display:none}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  if (th.classList.contains('nosort')) return;
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var asc = th.getAttribute('data-dir') !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function(h){ h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    rows.sort(function(a, b){
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : \
(isNaN(nx) ? 1 : 0) - (isNaN(ny) ? 1 : 0) || String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){ tbody.appendChild(r); });
  });
});
"""

# The naming form: every named cluster's exemplars become seed rows (video_id,path,cluster,label).
# Cells as `videolabel select` writes them (fsutil.csv_text: a leading = + - @ tab or CR gets a ',
# which read_seeds takes off again), then quoted for CSV.
NAMING_JS = """
(function(){
  var seeds = JSON.parse(document.getElementById('seed-videos').textContent);
  var form = document.getElementById('naming'), status = document.getElementById('naming-status');
  function text(s){ s = String(s); var t = s.replace(/^'+/, ''); \
return (s !== '' && /^[=+\\-@\\t\\r]/.test(t)) ? "'" + s : s; }
  function cell(s){ return '"' + text(s).replace(/"/g, '""') + '"'; }
  form.addEventListener('submit', function(ev){
    ev.preventDefault();
    var lines = ['video_id,path,cluster,label'], named = 0;
    document.querySelectorAll('input.name').forEach(function(inp){
      var name = inp.value.trim(), c = inp.getAttribute('data-cluster');
      if (!name) return;
      named += 1;
      (seeds[c] || []).forEach(function(v){ lines.push([cell(v[0]), cell(v[1]), c, cell(name)].join(',')); });
    });
    if (!named) { status.textContent = 'Name at least one cluster first.'; return; }
    var blob = new Blob([lines.join('\\r\\n') + '\\r\\n'], {type: 'text/csv'});
    var a = document.createElement('a');
    a.href = window.URL.createObjectURL(blob);
    a.download = 'seeds.csv';
    document.body.appendChild(a);
    a.click();
    a.remove();
    status.textContent = named + ' cluster(s) named, ' + (lines.length - 1) + ' seed video(s) in seeds.csv.';
  });
})();
"""

# The cluster page's viewer: hovering over (or focusing) a card shows its detail; a click pins it.
VIEW_JS = """
(function(){
  var viewer = document.getElementById('viewer'), pinned = null, blank = viewer.innerHTML;
  function show(card){
    viewer.innerHTML = '';
    viewer.appendChild(card.querySelector('.detail').cloneNode(true)).style.display = 'block';
    viewer.setAttribute('data-video', card.getAttribute('data-video'));
  }
  document.querySelectorAll('.card').forEach(function(card){
    card.addEventListener('mouseenter', function(){ if (!pinned) show(card); });
    card.addEventListener('focus', function(){ if (!pinned) show(card); });
    function toggle(){
      if (pinned) pinned.classList.remove('pinned');
      if (pinned === card) { pinned = null; return; }
      pinned = card; card.classList.add('pinned'); show(card);
      var au = viewer.querySelector('audio'); if (au) { au.play().catch(function(){}); }
    }
    card.addEventListener('click', toggle);
    card.addEventListener('keydown', function(ev){ \
if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(); } });
  });
  document.addEventListener('keydown', function(ev){
    if (ev.key === 'Escape' && pinned) { pinned.classList.remove('pinned'); pinned = null; viewer.innerHTML = blank; }
  });
})();
"""


def page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n{js}\n</body></html>\n")


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def cluster_file(c: int) -> str:
    return f"cluster_{int(c):03d}.html"


def json_script(obj) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` left to end it)."""
    return (json.dumps(obj, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def bar(x: float, cls: str = "") -> str:
    """A horizontal bar for a share in [0, 1] (empty for NaN)."""
    if x is None or not np.isfinite(x):
        return ""
    return f"<span class=\"bar {cls}\"><span style=\"width:{100 * min(max(x, 0.0), 1.0):.1f}%\"></span></span>"


#: at most this many points are drawn on the map (a seeded random sample beyond)
MAP_POINTS = 4000


def map_section(df: pd.DataFrame, feats, vids: pd.DataFrame, colour_of: dict[int, int], with_gt: bool) -> str:
    head = "<section id=\"map\"><h2>Map of the collection</h2>\n"
    if feats is None:
        return (head + "<p class=\"note\" id=\"no-map\">No map: pass <code>--features FILE</code>, the pooled features "
                "that <code>videolabel assign RUN --out A.parquet --features FILE</code> writes.</p></section>")
    vi = df["_vi"]
    has_audio = np.array([bool(vids["has_audio"].iloc[int(v)]) if pd.notna(v) else
                          bool(df["has_audio"].iloc[k]) if "has_audio" in df.columns else True
                          for k, v in enumerate(vi)], dtype=bool)
    x, rows = P.map_features(df, feats, has_audio)
    xy, share = P.pca_2d(x)
    n_all = len(rows)
    if n_all > MAP_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(n_all, MAP_POINTS, replace=False))
        xy, rows = xy[keep], rows[keep]
    cl = df["_cluster"].to_numpy()[rows]
    paths = df["path"].astype(str).to_numpy()[rows]
    cats = [colour_of[int(c)] for c in cl]
    links = [cluster_file(int(c)) for c in cl]
    titles = [f"cluster {int(c):03d}: {p}" for c, p in zip(cl, paths)]
    figs = [("by cluster", P.svg_scatter(xy, cats, titles=titles, links=links, label="map coloured by cluster"),
             "".join(f"<a href=\"{escape(cluster_file(c))}\">"
                     f"<span class=\"sw\" style=\"background:{P.colour(k)}\"></span>"
                     f"cluster {c:03d}</a>" for c, k in sorted(colour_of.items())))]
    if with_gt:
        g = df["_gt"].to_numpy(dtype=object)[rows]
        labs = sorted({str(v) for v in g if pd.notna(v)})
        lab_index = {lab: k for k, lab in enumerate(labs)}
        unk = len(labs)
        gcats = [lab_index[str(v)] if pd.notna(v) else unk for v in g]
        gtitles = [f"{str(v) if pd.notna(v) else 'no label'} (cluster {int(c):03d}): {p}"
                   for v, c, p in zip(g, cl, paths)]
        legend = "".join(f"<span class=\"lab\"><span class=\"sw\" style=\"background:{P.colour(k)}\"></span>"
                         f"{escape(lab)}</span>" for lab, k in lab_index.items())
        if unk in gcats:
            legend += (f"<span class=\"lab\"><span class=\"sw\" style=\"background:{P.colour(unk)}\"></span>"
                       "no label</span>")
        figs.append(("by ground truth", P.svg_scatter(xy, gcats, titles=gtitles, links=links, cls="map gt",
                                                      label="map coloured by ground-truth label"), legend))
    shown = f"{len(rows)} of {n_all}" if len(rows) < n_all else f"{n_all}"
    missing = len(df) - n_all
    body = "".join(f"<figure>{svg}<figcaption>coloured {escape(what)}<div class=\"legend\">{legend}</div>"
                   f"</figcaption></figure>" for what, svg, legend in figs)
    return (head + f"<div class=\"maps\">{body}</div>\n<p class=\"note\">{shown} videos (one dot each; a click opens "
            f"its cluster) on the first two principal components of their pooled encoder features (each modality "
            f"L2-normalised, concatenated, centred), which hold {100 * share[0]:.1f}% and {100 * share[1]:.1f}% of "
            f"the variance. Nearby dots: videos the encoders see as alike."
            + (f" {missing} video(s) of the assignments are not in the features file." if missing else "")
            + "</p></section>")


def index_page(title: str, a, summary: list[dict], with_gt: bool, shown_head: int | None, n_videos: int,
                map_html: str, seeds: dict, assignments_name: str) -> str:
    cols = [("cluster", "l"), ("most confident", "l nosort"), ("size", ""), ("mean confidence", ""),
            ("AV agreement", ""), ("inter-head stability", "")]
    if with_gt:
        cols += [("majority label", "l"), ("purity", ""), ("entropy (nats)", "")]
    cols += [("name", "l nosort")]
    head = "".join(f"<th class=\"{cls}\">{escape(c)}</th>" for c, cls in cols)
    biggest = max((s["size"] for s in summary), default=1)
    rows = []
    for s in summary:
        c = s["cluster"]
        strip = "".join(f"<img class=\"thumb\" loading=\"lazy\" src=\"{escape(t)}\" "
                        f"alt=\"most confident video {k + 1}\" "
                        f"title=\"{escape(f'{p} (confidence {fmt(conf)})', quote=True)}\">"
                        for k, (t, conf, p) in enumerate(s["thumbs"]))
        cells = [
            f"<td class=\"l cl\" data-v=\"{c}\"><a href=\"{escape(cluster_file(c))}\"><span class=\"sw\" "
            f"style=\"background:{P.colour(s['colour'])}\"></span>cluster {c:03d}</a></td>",
            f"<td class=\"l\"><a class=\"strip\" href=\"{escape(cluster_file(c))}\">{strip}</a></td>",
            f"<td class=\"num\" data-v=\"{s['size']}\">{bar(s['size'] / biggest)}{s['size']}</td>",
            f"<td data-v=\"{num(s['conf'])}\">{fmt(s['conf'])}</td>",
            f"<td class=\"num\" data-v=\"{num(s['av'])}\">{bar(s['av'], 'av')}{fmt(s['av'])}</td>",
            f"<td data-v=\"{num(s['stab'])}\">{fmt(s['stab'])}</td>",
        ]
        if with_gt:
            lab = s["label"]
            cells += [
                f"<td class=\"l\" data-v=\"{escape(lab or '', quote=True)}\">"
                f"{escape(lab) if lab is not None else '—'}</td>",
                f"<td data-v=\"{num(s['purity'])}\">{fmt(s['purity'])}</td>",
                f"<td data-v=\"{num(s['entropy'])}\">{fmt(s['entropy'])}</td>",
            ]
        cells.append(f"<td class=\"l\"><input type=\"text\" class=\"name\" form=\"naming\" data-cluster=\"{c}\" "
                     f"name=\"name_{c:03d}\" maxlength=\"200\" aria-label=\"name of cluster {c:03d}\"></td>")
        rows.append(f"<tr id=\"row-{c:03d}\">{''.join(cells)}</tr>")
    hd = "the cluster column" if shown_head is None else f"head {shown_head}"
    seeds_file = escape(assignments_name)
    body = (
        f"<h1>{escape(title)}</h1>\n"
        f"<p>{n_videos} videos in {len(summary)} clusters ({escape(hd)}; "
        f"heads: {escape(', '.join(map(str, a.heads)))}). "
        f"Click a column header to sort; a cluster's thumbnails or number open its page. "
        f"<a href=\"#map\">Map of the collection</a> · <a href=\"#naming\">Name clusters</a>.</p>\n"
        f"<table class=\"sortable\" id=\"clusters\"><thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows) + "\n</tbody></table>\n"
        "<form id=\"naming\"><strong>Name clusters.</strong> Type a name in the <em>name</em> column of the clusters "
        "you recognise, then <button type=\"submit\" id=\"download-seeds\">download seeds.csv</button> "
        "<span id=\"naming-status\" role=\"status\"></span><br><span class=\"note\">Each named cluster's exemplars "
        "(the most confident videos, shown first on its page) become seed rows "
        "<code>video_id,path,cluster,label</code>; "
        f"label the whole collection from them with <code>videolabel propagate {seeds_file} --seeds seeds.csv "
        "--out labels.parquet</code> (add <code>--features</code> to label unnamed clusters by their nearest "
        "seeds).</span></form>\n"
        f"<script type=\"application/json\" id=\"seed-videos\">{json_script(seeds)}</script>\n"
        "<p class=\"note\">Most confident: the middle frame of the first clip of the cluster's most confident videos. "
        "AV agreement: fraction of the cluster's videos whose audio and visual predictions agree "
        "(where known). Inter-head stability: for each other head, the share of the cluster's videos that this head "
        "puts in the cluster it gives most of them, averaged over the other heads (1 = all heads keep the cluster "
        "together; — with a single head). Purity: share of the majority ground-truth label among the labelled videos; "
        "entropy: of the ground-truth labels in the cluster, in nats.</p>\n"
        + map_html
    )
    return page(title, body, SORT_JS + NAMING_JS)


def cluster_page(title: str, c: int, df: pd.DataFrame, entries, other_cols: list[str], with_gt: bool,
                  s: dict) -> str:
    parts = ["<p><a href=\"index.html\">&larr; all clusters</a> · <a href=\"index.html#map\">map</a></p>",
             f"<h1><span class=\"sw\" style=\"background:{P.colour(s['colour'])}\"></span>cluster {c:03d}</h1>",
             f"<p>{s['size']} videos; mean confidence {fmt(s['conf'])}; AV agreement {fmt(s['av'])}; "
             f"inter-head stability {fmt(s['stab'])}"
             + (f"; majority label {escape(s['label']) if s['label'] is not None else '—'}, purity {fmt(s['purity'])}"
                if with_gt else "") + f". Showing {len(entries)}: exemplars (highest confidence) first, "
             "outliers (lowest confidence) apart below. Hover over a thumbnail to see its frames, spectrogram and "
             "sound; click to pin it (and play), Esc to unpin.</p>"]
    groups: dict[str, list[str]] = {"exemplar": [], "outlier": []}
    for it, info in entries:
        r = df.loc[it.row]
        conf = float(r["_conf"])
        media = []
        if info["strip"]:
            media.append(f"<img class=\"frames\" loading=\"lazy\" src=\"{escape(info['strip'])}\" "
                         "alt=\"frames of the first clip\">")
            media.append(f"<img class=\"spec\" loading=\"lazy\" src=\"{escape(info['spec'])}\" "
                         "alt=\"log-mel spectrogram of the first clip\">")
        else:
            media.append("<p class=\"na\">not in the cache: no frames or spectrogram</p>")
        if info["audio"]:
            media.append(f"<audio controls preload=\"none\" src=\"{escape(info['audio'])}\"></audio>")
            if info["audio_note"]:
                media.append(f"<p class=\"na\">{escape(info['audio_note'])}</p>")
        else:
            media.append(f"<p class=\"na\">{escape(info['audio_note'] or 'audio unavailable')}</p>")
        heads = ", ".join(f"{escape(col.removeprefix('cluster_'))}: {int(r[col])}" for col in other_cols)
        meta = [f"<div class=\"path\">{escape(str(r['path']))}</div>",
                f"<div>video_id {escape(str(r['video_id']))}</div>",
                f"<div>confidence {fmt(conf)}</div>"]
        if heads:
            meta.append(f"<div>other heads: {heads}</div>")
        gt_txt = ""
        if with_gt:
            g = r["_gt"]
            gt_txt = escape(str(g)) if pd.notna(g) else "—"
            meta.append(f"<div>ground truth: {gt_txt}</div>")
        thumb = (f"<img class=\"thumb\" src=\"{escape(info['thumb'])}\" alt=\"middle frame\">" if info["thumb"]
                 else "<p class=\"na\">not in the cache</p>")
        bar = (f"<span class=\"conf\"><span style=\"width:{100 * conf:.1f}%\"></span></span>"
               if np.isfinite(conf) else "")
        cap = f"{fmt(conf)}" + (f" · {gt_txt}" if with_gt else "")
        groups[it.kind].append(
            f"<figure class=\"card {it.kind}\" tabindex=\"0\" data-video=\"{escape(str(r['video_id']), quote=True)}\">"
            f"{thumb}<figcaption title=\"confidence\">{cap}{bar}</figcaption>"
            f"<div class=\"detail\">{''.join(media)}<div class=\"meta\">{''.join(meta)}</div></div></figure>")
    main = []
    for kind, heading in (("exemplar", "Exemplars"), ("outlier", "Outliers")):
        if groups[kind]:
            main.append(f"<h2>{heading}</h2>\n<div class=\"grid {kind}s\">{''.join(groups[kind])}</div>")
    body = ("\n".join(parts) + "\n<div class=\"layout\"><main>" + "\n".join(main) + "</main>"
            "<aside id=\"viewer\" aria-live=\"polite\"><p class=\"note\">Hover over or click a thumbnail.</p>"
            "</aside></div>")
    return page(f"{title}: cluster {c:03d}", body, VIEW_JS)
