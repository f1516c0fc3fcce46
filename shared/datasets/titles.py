"""Movie titles as the platforms write them, and the normal form used to match them.

MovieLens writes ``"Matrix, The (1999)"`` and alternative titles in parentheses
(``"Seven (a.k.a. Se7en) (1995)"``); MovieTweetings writes ``"The Matrix (1999)"``.
:func:`normalise_title` maps all of these to the same key.
"""

from __future__ import annotations

import re
import unicodedata

_YEAR_AT_END = re.compile(r"\s*\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")
_PAREN_AT_END = re.compile(r"^(.*\S)\s*\(([^()]*)\)\s*$")
_AKA = re.compile(r"^(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)
# Leading articles that catalogues move to the end ("Matrix, The", "Cité des enfants perdus, La").
_ARTICLES = (
    "the", "a", "an", "les", "la", "le", "l'", "il", "lo", "gli", "el", "los", "las", "das",
    "der", "die", "den", "det", "ein", "eine", "un", "une", "una", "o", "os", "as", "i",
)  # fmt: skip
_TRAILING_ARTICLE = re.compile(r"^(.*),\s*(" + "|".join(map(re.escape, _ARTICLES)) + r")$", re.I)


def split_title(full: str) -> tuple[str, tuple[str, ...], int | None]:
    """Split ``"Title (Alt title) (YEAR)"`` into (title, alternative titles, year)."""
    text = full.strip()
    year: int | None = None
    match = _YEAR_AT_END.search(text)
    if match:
        year = int(match.group(1))
        text = text[: match.start()].strip()
    alts: list[str] = []
    while True:
        match = _PAREN_AT_END.match(text)
        if not match:
            break
        text, alt = match.group(1).strip(), _AKA.sub("", match.group(2).strip())
        if alt:
            alts.append(alt)
    return text, tuple(reversed(alts)), year


def normalise_title(title: str) -> str:
    """Case-, accent- and punctuation-free title with a trailing article moved to the front."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().strip()
    match = _TRAILING_ARTICLE.match(text)
    if match:
        article = match.group(2)
        joiner = "" if article.endswith("'") else " "
        text = f"{article}{joiner}{match.group(1)}"
    text = text.replace("&", " and ")
    text = re.sub(r"[^0-9a-z]+", " ", text)
    return " ".join(text.split())
