"""Private-use characters of Hancom documents, made readable and searchable.

Hangul writes old Hangul syllables with the Hanyang private-use code points (U+E0BC-U+F8F7), for
example U+F53A for ᄒᆞᆫ in "ᄒᆞᆫ글". Their Unicode equivalents are sequences of conjoining jamo
(첫가끝), published by Hanyang and packaged as `hypua2jamo` (LGPL-3.0+, the mapping pyhwp's author
maintains); after NFC, sequences of modern jamo become ordinary syllables. Any other private-use
character (symbol-font bullets, check marks, decorations) has no reliable equivalent and is dropped;
where it stood between two words a single space is kept, so the words do not run together.

The mapping runs on each extracted string before sections are cut or any offset is computed, so
every offset the pipeline stores refers to the mapped text.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PUA = re.compile(r"[\ue000-\uf8ff]+")
_PUA_RUN = re.compile(r"([\ue000-\uf8ff]+)([ \t]*)")
_HANYANG_FIRST, _HANYANG_LAST = 0xE0BC, 0xF8F7


@lru_cache(maxsize=4096)
def _hanyang(ch: str) -> str | None:
    """The jamo sequence of a Hanyang PUA character, or None when it has none."""
    if not _HANYANG_FIRST <= ord(ch) <= _HANYANG_LAST:
        return None
    try:
        from hypua2jamo import translate
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    mapped = translate(ch, composed=True)
    return mapped if mapped and mapped != ch and not _PUA.search(mapped) else None


def map_private_use(text: str) -> str:
    """Text with Hanyang old-Hangul PUA mapped to Unicode jamo and other private-use characters dropped."""
    if not _PUA.search(text):
        return text

    def replace(m: re.Match[str]) -> str:
        out = []
        for ch in m.group(1):
            mapped = _hanyang(ch)
            if mapped is not None:
                out.append(mapped)
        if out:
            return "".join(out) + m.group(2)
        # Dropped: the words on either side stay apart, and a line does not start with a space.
        before = text[m.start() - 1 : m.start()]
        after = text[m.end() : m.end() + 1]
        if not before or before.isspace():
            return ""
        return " " if m.group(2) or (after and not after.isspace()) else ""

    return _PUA_RUN.sub(replace, text)
