"""`hashing duplicates --report OUT.html`: one self-contained page to check the groups before moving anything.

Each group is a row of its files side by side: a thumbnail (a PNG inline as a data: URL, so the page
is one file that works offline and anywhere it is copied), the distance to the kept file, and which
file is kept; the kept file is framed. Every name is HTML-escaped: a file called "<script>.png" shows
as text. No script runs on the page. A name the page cannot hold as it is (bytes that are not UTF-8,
control characters) shows with those characters as escapes, `\\udcff` or `\\n`, as the JSON output
and the printed text show them.
"""

from __future__ import annotations

import base64
import html
import os

from hashing.core.errors import HashingError

THUMB = 160

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em}.summary{color:#555}.group{background:#fff;border:1px solid #ddd;border-radius:6px;
margin:1em 0;padding:.6em}.group h2{font-size:1em;margin:.2em 0 .5em}.files{display:flex;flex-wrap:wrap;gap:.8em}
figure{margin:0;width:170px;border:3px solid transparent;padding:3px;background:#f4f4f4}
figure.keep{border-color:#2a8a2a}figure img{display:block;max-width:160px;max-height:160px;margin:auto;
background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 0 0/16px 16px}
figcaption{font-size:.8em;word-break:break-all}.tag{font-weight:bold}.keep .tag{color:#2a8a2a}
.missing{width:160px;height:60px;display:flex;align-items:center;justify-content:center;color:#a00}"""


def _thumbnail(path: str) -> str:
    """An <img> with the file as an inline PNG, or a note when it cannot be read any more."""
    from hashing.images.reader import thumbnail_png

    try:
        data = base64.b64encode(thumbnail_png(path, THUMB)).decode("ascii")
    except (HashingError, OSError):
        return '<div class="missing">cannot be shown</div>'
    return f'<img alt="" src="data:image/png;base64,{data}">'


def visible(text: str) -> str:
    """`text` with every character that is not printable (a byte of a non-UTF-8 name, which os.fsdecode
    made a lone surrogate that no UTF-8 page can hold; a newline) as its escape."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render(found, progress: bool = False) -> str:
    """The page for a hashing.dedup.find.Found."""
    from tqdm import tqdm

    def e(text: str) -> str:
        return html.escape(visible(text))
    parts = ["<!doctype html><html><head><meta charset=\"utf-8\"><title>Duplicates</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>Duplicates</h1>",
             f'<p class="summary" id="summary">{e(found.summary())}</p>']
    total = sum(len(g) for g in found.groups)
    with tqdm(total=total, desc="report thumbnails", unit="img", disable=not progress, leave=False) as bar:
        for n, group in enumerate(found.groups, 1):
            parts.append(f'<section class="group" data-group="{n}"><h2>group {n}: {len(group)} files</h2>'
                         '<div class="files">')
            for m in group:
                cls = "keep" if m.keep else "copy"
                tag = "keep" if m.keep else "copy"
                parts.append(f'<figure class="{cls}" data-distance="{m.distance}">{_thumbnail(m.path)}'
                             f'<figcaption><span class="tag">{tag}</span> · distance <b>{m.distance}</b><br>'
                             f'<span class="path">{e(m.path)}</span></figcaption></figure>')
                bar.update()
            parts.append("</div></section>")
    if found.skipped:
        parts.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{e(why)}</li>" for _, why in found.skipped) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(found, path: str | os.PathLike, progress: bool = False) -> None:
    from hashing.core.atomic import atomic_path

    page = render(found, progress)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8", errors="backslashreplace")     # as `visible` writes a name
