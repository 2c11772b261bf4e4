"""Markdown as GitHub renders it, for the tests that hold the docs to the code: the anchors of
a page's headings."""

from __future__ import annotations

import re


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def without_code_blocks(text: str) -> str:
    """The text without its fenced code blocks."""
    return re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)


def anchors(text: str) -> set[str]:
    """Every heading's anchor (a repeated heading gets -1, -2 ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(text), flags=re.M):
        anchor = slug(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found
