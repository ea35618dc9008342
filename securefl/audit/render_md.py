"""Markdown rendering of a report dict (for pull requests, tickets and model cards).

The content and its order come from :func:`securefl.audit.render_common.report_blocks`, shared
with the HTML (and so the PDF) rendering; this module only escapes and lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from securefl.audit.render_common import fmt, report_blocks

__all__ = ["fmt", "render_markdown"]


def _md(text: Any) -> str:
    """Escape Markdown table/inline metacharacters in recorded text."""
    s = fmt(text)
    for ch in ("\\", "|", "*", "_", "`", "<", ">", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for block in report_blocks(report):
        kind = block[0]
        if kind == "h1":
            lines += [f"# {_md(block[1])}", ""]
        elif kind == "h2":
            lines += ["", f"## {_md(block[1])}", ""]
        elif kind == "h3":
            lines += ["", f"### {_md(block[1])}", ""]
        elif kind == "p":
            text, style = _md(block[1]), block[2]
            lines += [f"**{text}**" if style in ("strong", "bad") else text, ""]
        elif kind == "banner":
            lines += [f"**{_md(block[1])}**", ""]
        elif kind == "table":
            lines += [*_table(block[1], block[2]), ""]
        elif kind == "ul":
            lines += [f"- {_md(x)}" for x in block[1]] + [""]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"
