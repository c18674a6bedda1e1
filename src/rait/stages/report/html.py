"""The report as one self-contained HTML page: figures embedded as base64 data URIs, no external
CSS or scripts, so the file can be mailed or archived on its own."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.notes li { color: #666; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def table(caption: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(title: str, sections: list[dict], notes: list[str]) -> str:
    parts = [f"<h1>{escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{escape(section['title'])}</h2>")
        if section["text"]:
            parts.append(f"<p>{escape(section['text'])}</p>")
        parts += [table(caption, header, rows) for caption, header, rows in section["tables"]]
        parts += [f'<img alt="{escape(f.stem)}" src="{data_uri(f)}">' for f in section["figures"]
                  if Path(f).exists()]
    if notes:
        parts.append("<h2>Notes</h2><ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
