"""Automatic paragraph numbering of Hangul documents (개요 번호, 문단 번호), as a reader sees it.

A numbering definition has, per level, a format string such as "^1." or "(^3)" (^n: the current
number of level n, written in level n's number shape) and a start number. HWP 5 stores the shape
as an index (bits 5-9 of the paragraph-head property), HWPX as a name (numFormat); both name the
same 17 shapes in the same order (public HWP 5.0 and OWPML specifications).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUMBER_SHAPES = (
    "DIGIT",
    "CIRCLED_DIGIT",
    "ROMAN_CAPITAL",
    "ROMAN_SMALL",
    "LATIN_CAPITAL",
    "LATIN_SMALL",
    "CIRCLED_LATIN_CAPITAL",
    "CIRCLED_LATIN_SMALL",
    "HANGUL_SYLLABLE",
    "CIRCLED_HANGUL_SYLLABLE",
    "HANGUL_JAMO",
    "CIRCLED_HANGUL_JAMO",
    "HANGUL_PHONETIC",
    "IDEOGRAPH",
    "CIRCLED_IDEOGRAPH",
    "DECAGON_CIRCLE",
    "DECAGON_CIRCLE_HANJA",
)
_JAMO = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎ"
_CHOSEONG = (0, 2, 3, 5, 6, 7, 9, 11, 12, 14, 15, 16, 17, 18)  # indices of ㄱ…ㅎ among the 19 initials
_VOWELS = (0, 4, 8, 13, 18, 20)  # ㅏ ㅓ ㅗ ㅜ ㅡ ㅣ among the 21 medials
_SINO_KO = "영일이삼사오육칠팔구"
_SINO_HANJA = "〇一二三四五六七八九"
_GAN_KO = "갑을병정무기경신임계"
_GAN_HANJA = "甲乙丙丁戊己庚辛壬癸"
_ROMAN: tuple[tuple[int, str], ...] = (
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
)
_PLACEHOLDER = re.compile(r"\^(10|[1-9])")


def _roman(n: int) -> str:
    out = []
    for value, letters in _ROMAN:
        while n >= value:
            out.append(letters)
            n -= value
    return "".join(out)


def _sino(n: int, digits: str) -> str:
    """1-99 in Sino-Korean words or hanja (십일, 二十三); larger numbers in digits."""
    if not 0 < n < 100:
        return str(n)
    tens, ones = divmod(n, 10)
    ten = "십" if digits is _SINO_KO else "十"
    out = ""
    if tens:
        out += (digits[tens] if tens > 1 else "") + ten
    if ones:
        out += digits[ones]
    return out


def format_number(n: int, shape: str) -> str:
    """The number `n` (1-based) written in `shape` (a name of NUMBER_SHAPES; unknown: digits)."""
    if n < 1:
        return str(n)
    i = n - 1
    if shape == "CIRCLED_DIGIT":
        if n <= 20:
            return chr(0x2460 + i)
        if n <= 35:
            return chr(0x3251 + n - 21)
        if n <= 50:
            return chr(0x32B1 + n - 36)
        return str(n)
    if shape == "ROMAN_CAPITAL":
        return _roman(n) if n < 4000 else str(n)
    if shape == "ROMAN_SMALL":
        return _roman(n).lower() if n < 4000 else str(n)
    if shape == "LATIN_CAPITAL":
        return chr(ord("A") + i % 26)
    if shape == "LATIN_SMALL":
        return chr(ord("a") + i % 26)
    if shape == "CIRCLED_LATIN_CAPITAL":
        return chr(0x24B6 + i % 26)
    if shape == "CIRCLED_LATIN_SMALL":
        return chr(0x24D0 + i % 26)
    if shape == "HANGUL_SYLLABLE":  # 가…하, 거…허, 고…호, 구…후, 그…흐, 기…히, again
        i %= 14 * 6
        return chr(0xAC00 + (_CHOSEONG[i % 14] * 21 + _VOWELS[i // 14]) * 28)
    if shape == "CIRCLED_HANGUL_SYLLABLE":
        return chr(0x326E + i % 14)
    if shape == "HANGUL_JAMO":
        return _JAMO[i % 14]
    if shape == "CIRCLED_HANGUL_JAMO":
        return chr(0x3260 + i % 14)
    if shape == "HANGUL_PHONETIC":
        return _sino(n, _SINO_KO)
    if shape == "IDEOGRAPH":
        return _sino(n, _SINO_HANJA)
    if shape == "CIRCLED_IDEOGRAPH":
        return chr(0x3280 + i % 10)
    if shape == "DECAGON_CIRCLE":
        return _GAN_KO[i % 10]
    if shape == "DECAGON_CIRCLE_HANJA":
        return _GAN_HANJA[i % 10]
    return str(n)


@dataclass
class LevelFormat:
    template: str  # "^1.", "(^3)"; empty: the level shows no number
    shape: str = "DIGIT"
    start: int = 1


@dataclass
class Numbering:
    """One numbering definition (levels 1-10) and the counters of the paragraphs seen so far."""

    levels: list[LevelFormat]
    counters: list[int | None] = field(default_factory=list)

    def next(self, level: int) -> str:
        """The number text of the next paragraph at `level` (0-based); deeper levels start again."""
        if not 0 <= level < len(self.levels):
            return ""
        if len(self.counters) < len(self.levels):
            self.counters = self.counters + [None] * (len(self.levels) - len(self.counters))
        current = self.counters[level]
        self.counters[level] = self.levels[level].start if current is None else current + 1
        for deeper in range(level + 1, len(self.counters)):
            self.counters[deeper] = None

        def fill(m: re.Match[str]) -> str:
            k = int(m.group(1)) - 1
            if k >= len(self.levels):
                return ""
            value = self.counters[k]
            if value is None:
                value = self.levels[k].start
            return format_number(value, self.levels[k].shape)

        return _PLACEHOLDER.sub(fill, self.levels[level].template).strip()


def shape_name(index: int) -> str:
    return NUMBER_SHAPES[index] if 0 <= index < len(NUMBER_SHAPES) else "DIGIT"
