"""HWP 5.0 (한/글 binary, OLE compound file): a small reader of the documented record structure.

Reference: Hancom, "한글 문서 파일 형식 5.0" (revision 1.3), public specification. Only what text
extraction needs is read: FileHeader (signature, version, flags), BodyText/SectionN streams (raw
deflate when the compressed flag is set), and in them the records PARA_HEADER, PARA_TEXT,
CTRL_HEADER, LIST_HEADER and TABLE. Nothing in the file is executed (scripts are ignored).
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._types import HWP, ExtractedDocument, Section

SIGNATURE = b"HWP Document File"

# FileHeader property bits (spec table 3).
FLAG_COMPRESSED = 1 << 0
FLAG_PASSWORD = 1 << 1
FLAG_DISTRIBUTION = 1 << 2
FLAG_DRM = 1 << 4
FLAG_CERT_ENCRYPTED = 1 << 8
FLAG_CERT_DRM = 1 << 10

# Record tag ids (spec table 57): HWPTAG_BEGIN = 0x10.
HWPTAG_BEGIN = 0x10
TAG_PARA_HEADER = HWPTAG_BEGIN + 50  # 66
TAG_PARA_TEXT = HWPTAG_BEGIN + 51  # 67
TAG_CTRL_HEADER = HWPTAG_BEGIN + 55  # 71
TAG_LIST_HEADER = HWPTAG_BEGIN + 56  # 72
TAG_TABLE = HWPTAG_BEGIN + 61  # 77

# Control characters in PARA_TEXT (spec table 6). "char" controls take one WCHAR; "inline" and
# "extended" controls take 8 WCHARs (the code, 6 WCHARs of data or object pointer, the code again).
CHAR_CONTROLS = frozenset({0, 10, 13, 24, 25, 26, 27, 28, 29, 30, 31})
INLINE_CONTROLS = frozenset({4, 5, 6, 7, 8, 9, 19, 20})
EXTENDED_CONTROLS = frozenset({1, 2, 3, 11, 12, 14, 15, 16, 17, 18, 21, 22, 23})
_CHAR_TEXT = {10: "\n", 24: "-", 30: " ", 31: " "}  # line break, hyphen, 묶음 빈칸, 고정폭 빈칸
_TAB = 9
_OBJECT = 11  # 그리기 개체/표
CELL_SEPARATOR = " | "
# Controls whose paragraphs are not document text: hidden comments (숨은 설명).
_SKIP_CONTROL_IDS = {"tcmt"}
_SECTION_STREAM = re.compile(r"^Section(\d+)$")
_CHUNK = 4 * 2**20
_RATIO_FLOOR = 2**20


@dataclass(frozen=True)
class FileHeader:
    version: tuple[int, int, int, int]
    flags: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)


def parse_file_header(data: bytes) -> FileHeader:
    """Parse and vet the FileHeader stream; encrypted, DRM and distribution documents raise ExtractionError."""
    if len(data) < 40 or not data.startswith(SIGNATURE):
        raise ExtractionError("corrupt HWP: the FileHeader signature is missing")
    raw_version, flags = struct.unpack_from("<II", data, 32)
    version = (raw_version >> 24 & 0xFF, raw_version >> 16 & 0xFF, raw_version >> 8 & 0xFF, raw_version & 0xFF)
    if version[0] != 5:
        raise ExtractionError(f"unsupported HWP version {'.'.join(map(str, version))}: only HWP 5.x is supported")
    if flags & FLAG_PASSWORD:
        raise ExtractionError("encrypted HWP: the document is password-protected (암호 설정 문서)")
    if flags & (FLAG_DRM | FLAG_CERT_DRM):
        raise ExtractionError("DRM-protected HWP: the document is locked by DRM (DRM 보안 문서)")
    if flags & FLAG_CERT_ENCRYPTED:
        raise ExtractionError("encrypted HWP: the document is encrypted with a certificate (공인 인증서 암호화)")
    if flags & FLAG_DISTRIBUTION:
        raise ExtractionError("distribution HWP: a 배포용 문서 keeps its text encrypted and cannot be extracted")
    return FileHeader(version=version, flags=flags)


@dataclass(eq=False)
class Record:
    tag: int
    level: int
    payload: bytes
    children: list[Record] = field(default_factory=list)


def parse_records(data: bytes) -> list[Record]:
    """Split a decompressed DocInfo/Section stream into records (header: tag 10 bits, level 10, size 12).

    A size of 0xFFF means the real size follows as a 4-byte integer. Truncation raises ExtractionError.
    """
    records: list[Record] = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise ExtractionError("corrupt HWP: a record header is cut off")
        (header,) = struct.unpack_from("<I", data, pos)
        pos += 4
        tag = header & 0x3FF
        level = (header >> 10) & 0x3FF
        size = header >> 20
        if size == 0xFFF:
            if pos + 4 > end:
                raise ExtractionError("corrupt HWP: a record header is cut off")
            (size,) = struct.unpack_from("<I", data, pos)
            pos += 4
        if pos + size > end:
            raise ExtractionError("corrupt HWP: a record runs past the end of its stream")
        records.append(Record(tag, level, data[pos : pos + size]))
        pos += size
    return records


def build_tree(records: list[Record], max_depth: int) -> Record:
    """Nest records by level: each record is a child of the closest earlier record one level up."""
    root = Record(tag=-1, level=-1, payload=b"")
    stack = [root]
    for rec in records:
        if rec.level > max_depth:
            raise ExtractionError(f"HWP records nested deeper than {max_depth} levels")
        while stack[-1].level >= rec.level:
            stack.pop()
        stack[-1].children.append(rec)  # a level gap (corrupt) attaches to the nearest open record
        stack.append(rec)
    return root


def decode_para_text(payload: bytes) -> str:
    """UTF-16LE paragraph text with control characters resolved: tab → '\\t', line break → '\\n',
    hyphen/non-breaking spaces kept, paragraph end and object/field controls (8 WCHARs each) dropped.
    """
    n = len(payload) // 2
    codes = memoryview(payload[: 2 * n]).cast("H")
    if sys.byteorder == "big":  # pragma: no cover - the format is little-endian
        import array

        arr = array.array("H", payload[: 2 * n])
        arr.byteswap()
        codes = memoryview(arr.tobytes()).cast("H")
    parts: list[str] = []
    start = 0
    i = 0
    while i < n:
        c = codes[i]
        if c >= 32:
            i += 1
            continue
        if start < i:
            parts.append(payload[2 * start : 2 * i].decode("utf-16-le", errors="replace"))
        if c in CHAR_CONTROLS:
            parts.append(_CHAR_TEXT.get(c, ""))
            i += 1
        else:  # inline or extended control: 8 WCHARs
            if c == _TAB:
                parts.append("\t")
            elif c == _OBJECT:
                parts.append(" ")  # a table or drawing object separates the words around it
            i += 8
        start = i
    if start < n:
        parts.append(payload[2 * start : 2 * n].decode("utf-16-le", errors="replace"))
    return "".join(parts)


def control_id(ctrl: Record) -> str:
    """The 4-character control id of a CTRL_HEADER ('tbl ', 'gso ', 'secd', …), stored as a little-endian UINT32."""
    return ctrl.payload[:4][::-1].decode("latin-1") if len(ctrl.payload) >= 4 else ""


class _TextBuilder:
    """Turns a section's record tree into lines: paragraphs in order, tables one line per row."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.count = 0

    def lines(self, node: Record) -> list[str]:
        out: list[str] = []
        for child in node.children:
            if child.tag == TAG_PARA_HEADER:
                out.extend(self.paragraph(child))
            elif child.tag == TAG_CTRL_HEADER:
                out.extend(self.control(child))
            elif child.tag != TAG_PARA_TEXT:
                out.extend(self.lines(child))
        return out

    def paragraph(self, para: Record) -> list[str]:
        self.count += 1
        if self.count % 1024 == 0:
            self.budget.check_time()
        texts: list[str] = []
        nested: list[str] = []
        for child in para.children:
            if child.tag == TAG_PARA_TEXT:
                texts.append(decode_para_text(child.payload))
            elif child.tag == TAG_CTRL_HEADER:
                nested.extend(self.control(child))
        text = "".join(texts).strip()
        return ([text] if text.strip() else []) + nested

    def control(self, ctrl: Record) -> list[str]:
        cid = control_id(ctrl)
        if cid in _SKIP_CONTROL_IDS:
            return []
        if cid == "tbl ":
            return self.table(ctrl)
        return self.lines(ctrl)

    def table(self, ctrl: Record) -> list[str]:
        caption: list[str] = []
        cells: list[tuple[int, int, list[str]]] = []
        n_cols = 0
        seen_table = False
        current: list[str] | None = None
        for child in ctrl.children:
            if child.tag == TAG_TABLE:
                seen_table = True
                if len(child.payload) >= 8:
                    n_cols = struct.unpack_from("<H", child.payload, 6)[0]
                current = None
            elif child.tag == TAG_LIST_HEADER:
                if not seen_table:
                    current = caption  # a caption's paragraph list comes before the TABLE record
                    continue
                index = len(cells)
                if len(child.payload) >= 12:
                    col, row = struct.unpack_from("<HH", child.payload, 8)
                else:
                    col, row = (index % n_cols, index // n_cols) if n_cols else (index, 0)
                current = []
                cells.append((row, col, current))
            elif child.tag == TAG_PARA_HEADER:
                target = current if current is not None else caption
                target.extend(self.paragraph(child))
            elif child.tag == TAG_CTRL_HEADER:
                (current if current is not None else caption).extend(self.control(child))
        rows: dict[int, list[tuple[int, str]]] = {}
        for row, col, lines in cells:
            rows.setdefault(row, []).append((col, " ".join(" ".join(lines).split())))
        out = list(caption)
        for row in sorted(rows):
            texts = [t for _, t in sorted(rows[row], key=lambda x: x[0])]
            if any(texts):
                out.append(CELL_SEPARATOR.join(texts))
        return out


def section_text_lines(stream: bytes, budget: Budget) -> list[str]:
    """Text lines of one decompressed BodyText/SectionN stream."""
    tree = build_tree(parse_records(stream), budget.limits.max_xml_depth)
    return _TextBuilder(budget).lines(tree)


def inflate(data: bytes, budget: Budget, what: str) -> bytes:
    """Raw-deflate decompress (zlib wbits -15) in bounded steps: bombs and truncation raise ExtractionError."""
    d = zlib.decompressobj(-15)
    out = bytearray()
    pending = data
    limit_ratio = budget.limits.max_compression_ratio
    try:
        while True:
            chunk = d.decompress(pending, _CHUNK)
            pending = d.unconsumed_tail
            if chunk:
                budget.take(len(chunk), what)
                out += chunk
                if len(out) > _RATIO_FLOOR and len(out) > limit_ratio * max(1, len(data)):
                    raise ExtractionError(f"decompression bomb suspected: {what} expands more than {limit_ratio:g}x")
                budget.check_time()
            if d.eof or (not chunk and not pending):
                break
    except zlib.error as exc:
        raise ExtractionError(f"corrupt HWP: {what} cannot be decompressed ({exc})") from None
    if not d.eof:
        raise ExtractionError(f"corrupt or truncated HWP: {what} ends in the middle of its compressed data")
    return bytes(out)


def extract_hwp(path: Path, budget: Budget) -> ExtractedDocument:
    """HWP 5.x file → document with one section per BodyText section."""
    import olefile

    try:
        ole = olefile.OleFileIO(str(path))
    except Exception as exc:  # olefile raises OSError, struct.error, IndexError… on damaged containers
        raise ExtractionError("corrupt or truncated HWP: the OLE container cannot be read") from exc
    try:
        try:
            if not ole.exists("FileHeader"):
                raise ExtractionError("not an HWP 5 document: the OLE file has no FileHeader stream")
            header = parse_file_header(ole.openstream("FileHeader").read(256))
            entries = ole.listdir(streams=True, storages=False)
            numbered = []
            for entry in entries:
                if len(entry) == 2 and entry[0] == "BodyText" and (m := _SECTION_STREAM.match(entry[1])):
                    numbered.append((int(m.group(1)), "/".join(entry)))
            if not numbered:
                if any(entry and entry[0] == "ViewText" for entry in entries):
                    raise ExtractionError("distribution HWP: a 배포용 문서 keeps its text encrypted")
                raise ExtractionError("corrupt HWP: it has no BodyText sections")
            title = _summary_title(ole)
            file_size = path.stat().st_size
            sections: list[Section] = []
            for _, name in sorted(numbered):
                budget.check_time()
                if ole.get_size(name) > file_size:
                    raise ExtractionError(f"corrupt HWP: stream {name} is larger than the file")
                raw = ole.openstream(name).read()
                stream = inflate(raw, budget, name) if header.compressed else raw
                if not header.compressed:
                    budget.take(len(raw), name)
                text = "\n".join(section_text_lines(stream, budget))
                if text.strip():
                    sections.append(Section(text=text))
        except ExtractionError:
            raise
        except Exception as exc:  # damaged sector chains surface as OSError/IndexError/struct.error in olefile
            raise ExtractionError(f"corrupt HWP: {type(exc).__name__} while reading the OLE container") from exc
    finally:
        ole.close()
    if not sections:
        raise ExtractionError("no text: the HWP document's body is empty")
    return ExtractedDocument(media_type=HWP, sections=sections, title=title)


def _summary_title(ole) -> str | None:
    """Title (PIDSI_TITLE = 2) from the \\x05HwpSummaryInformation property set, if present and readable."""
    name = "\x05HwpSummaryInformation"
    try:
        if not ole.exists(name) or ole.get_size(name) > 2**20:
            return None
        return property_set_title(ole.openstream(name).read())
    except Exception:  # optional metadata; a damaged property set must not lose the text
        return None


def property_set_title(data: bytes) -> str | None:
    """PIDSI_TITLE of the first section of an OLE property set (VT_LPWSTR or VT_LPSTR in CP949)."""
    if len(data) < 48 or data[:2] != b"\xfe\xff":
        return None
    (section_offset,) = struct.unpack_from("<I", data, 44)
    if section_offset + 8 > len(data):
        return None
    _size, count = struct.unpack_from("<II", data, section_offset)
    for i in range(min(count, 256)):
        at = section_offset + 8 + 8 * i
        if at + 8 > len(data):
            return None
        prop_id, prop_offset = struct.unpack_from("<II", data, at)
        if prop_id != 2:
            continue
        at = section_offset + prop_offset
        if at + 8 > len(data):
            return None
        vt, n = struct.unpack_from("<II", data, at)
        if vt == 0x1F:  # VT_LPWSTR: n UTF-16 code units including the terminating NUL
            raw = data[at + 8 : at + 8 + 2 * n].decode("utf-16-le", errors="replace")
        elif vt == 0x1E:  # VT_LPSTR: n bytes including NUL, in the ANSI code page (CP949 for Korean)
            raw = data[at + 8 : at + 8 + n].decode("cp949", errors="replace")
        else:
            return None
        title = raw.split("\x00", 1)[0].strip()
        return title or None
    return None
