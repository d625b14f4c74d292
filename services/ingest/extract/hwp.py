"""HWP 5.0 (한/글 binary, OLE compound file): a small reader of the documented record structure.

Reference: Hancom, "한글 문서 파일 형식 5.0" (revision 1.3), public specification. Only what text
extraction needs is read: FileHeader (signature, version, flags), DocInfo (paragraph shapes and
numberings, for headings and automatic numbers), BodyText/SectionN streams (raw deflate when the
compressed flag is set), and in them the records PARA_HEADER, PARA_TEXT, CTRL_HEADER, LIST_HEADER
and TABLE. Nothing in the file is executed (scripts are ignored).

배포용 (distribution) documents keep their body in ViewText/SectionN streams: each starts with a
DISTRIBUTE_DOC_DATA record of 256 bytes, scrambled with MSVC's rand() seeded by its first 4
bytes, which holds the AES-128 key of the rest of the stream (ECB); the decrypted stream is then
an ordinary (compressed) section. No password is involved, so they are read like any other
document; only documents protected by a user's password are refused.
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
from ._numbering import LevelFormat, Numbering, shape_name
from ._structure import SectionBuilder, item_lines, row_line
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
TAG_PARA_SHAPE = HWPTAG_BEGIN + 9  # 25
TAG_NUMBERING = HWPTAG_BEGIN + 14  # 30
TAG_DISTRIBUTE_DOC_DATA = HWPTAG_BEGIN + 12  # 28
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

    @property
    def distribution(self) -> bool:
        return bool(self.flags & FLAG_DISTRIBUTION)


def parse_file_header(data: bytes) -> FileHeader:
    """Parse and vet the FileHeader stream; password-protected, DRM and certificate-encrypted documents
    raise ExtractionError (distribution documents are read: see decrypt_view_text)."""
    if len(data) < 40 or not data.startswith(SIGNATURE):
        raise ExtractionError("corrupt HWP: the FileHeader signature is missing")
    raw_version, flags = struct.unpack_from("<II", data, 32)
    version = (raw_version >> 24 & 0xFF, raw_version >> 16 & 0xFF, raw_version >> 8 & 0xFF, raw_version & 0xFF)
    if version[0] != 5:
        raise ExtractionError(f"unsupported HWP version {'.'.join(map(str, version))}: only HWP 5.x is supported")
    if flags & FLAG_PASSWORD:
        raise ExtractionError(
            "password-protected HWP: the document is encrypted with a user's password (암호 설정 문서)"
            " and cannot be read without it"
        )
    if flags & (FLAG_DRM | FLAG_CERT_DRM):
        raise ExtractionError("DRM-protected HWP: the document is locked by DRM (DRM 보안 문서)")
    if flags & FLAG_CERT_ENCRYPTED:
        raise ExtractionError("encrypted HWP: the document is encrypted with a certificate (공인 인증서 암호화)")
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
            raise ExtractionError(f"corrupt HWP: records nested deeper than {max_depth} levels (a damaged file)")
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


@dataclass(frozen=True)
class ParaShape:
    head: int  # 0 none, 1 outline (개요), 2 number (문단 번호), 3 bullet
    level: int  # 0-based
    numbering_id: int  # 1-based NUMBERING record (for head == 2); 0: none


HEAD_OUTLINE, HEAD_NUMBER = 1, 2


@dataclass
class DocStyles:
    """What DocInfo says about paragraphs: their shapes (heading kind and level) and numberings."""

    para_shapes: list[ParaShape] = field(default_factory=list)
    numberings: list[Numbering] = field(default_factory=list)

    def numbering(self, one_based_id: int) -> Numbering | None:
        if 1 <= one_based_id <= len(self.numberings):
            return self.numberings[one_based_id - 1]
        return None


def parse_doc_info(stream: bytes, version: tuple[int, int, int, int]) -> DocStyles:
    """Paragraph shapes and numbering definitions from a decompressed DocInfo stream.

    Optional: a record too short or malformed is skipped, so a damaged DocInfo only loses headings.
    """
    styles = DocStyles()
    for rec in parse_records(stream):
        if rec.tag == TAG_PARA_SHAPE:
            if len(rec.payload) >= 32:
                (props,) = struct.unpack_from("<I", rec.payload, 0)
                (numbering_id,) = struct.unpack_from("<H", rec.payload, 30)
                styles.para_shapes.append(ParaShape((props >> 23) & 0x3, (props >> 25) & 0x7, numbering_id))
            else:
                styles.para_shapes.append(ParaShape(0, 0, 0))
        elif rec.tag == TAG_NUMBERING:
            styles.numberings.append(parse_numbering(rec.payload, version))
    return styles


def parse_numbering(payload: bytes, version: tuple[int, int, int, int]) -> Numbering:
    """NUMBERING record: 7 levels (head info of 12 bytes + format string), start number, then (5.0.2.5+)
    7 level start numbers, then optionally levels 8-10 and their start numbers."""
    levels: list[LevelFormat] = []
    pos = 0

    def read_level() -> bool:
        nonlocal pos
        if pos + 14 > len(payload):
            return False
        (props,) = struct.unpack_from("<I", payload, pos)
        (n,) = struct.unpack_from("<H", payload, pos + 12)
        pos += 14
        template = payload[pos : pos + 2 * n].decode("utf-16-le", errors="replace")
        pos += 2 * n
        levels.append(LevelFormat(template, shape_name((props >> 5) & 0x1F)))
        return True

    for _ in range(7):
        if not read_level():
            break
    if pos + 2 <= len(payload):
        (start,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        for level in levels:
            level.start = max(1, start)
    if version >= (5, 0, 2, 5) and pos + 28 <= len(payload):
        for i, level in enumerate(levels[:7]):
            level.start = max(1, struct.unpack_from("<I", payload, pos + 4 * i)[0])
        pos += 28
    if len(levels) == 7 and pos < len(payload):
        extra = [read_level() for _ in range(3)]
        if all(extra) and pos + 12 <= len(payload):
            for i, level in enumerate(levels[7:10]):
                level.start = max(1, struct.unpack_from("<I", payload, pos + 4 * i)[0])
    return Numbering(levels)


@dataclass
class _Cell:
    row: int
    col: int
    lines: list[str]


class _Walker:
    """Turns a section's record tree into headings, paragraphs and tables (see _structure).

    Paragraphs whose shape is an outline level (개요) are headings; outline and paragraph numbers
    are written in front of their paragraphs as the reader sees them. Text inside table cells,
    text boxes, headers, footers and notes becomes plain lines.
    """

    def __init__(self, budget: Budget, styles: DocStyles, out: SectionBuilder) -> None:
        self.budget = budget
        self.styles = styles
        self.out = out
        self.outline_id = 1  # the section's outline numbering (SECTION_DEF), 1 by default
        self._fallback = Numbering([LevelFormat("") for _ in range(10)])

    # --- the body: headings, paragraphs and tables go to the section builder ---------------

    def body(self, node: Record) -> None:
        for child in node.children:
            if child.tag == TAG_PARA_HEADER:
                text, items, heading_level = self.paragraph(child, body=True)
                if heading_level is not None and text.strip():
                    self.out.add_heading(heading_level, text)
                elif text.strip():
                    self.out.add_line(text)
                for item in items:
                    if isinstance(item, str):
                        self.out.add_line(item)
                    else:
                        self.out.add_table(*item)
            elif child.tag == TAG_CTRL_HEADER:
                for item in self.control(child, body=True):
                    if isinstance(item, str):
                        self.out.add_line(item)
                    else:
                        self.out.add_table(*item)
            elif child.tag != TAG_PARA_TEXT:
                self.body(child)

    # --- nested lists (cells, text boxes, notes): lines only --------------------------------

    def lines(self, node: Record) -> list[str]:
        out: list[str] = []
        for child in node.children:
            if child.tag == TAG_PARA_HEADER:
                text, items, _ = self.paragraph(child, body=False)
                if text.strip():
                    out.append(text)
                out.extend(item_lines(items))
            elif child.tag == TAG_CTRL_HEADER:
                out.extend(item_lines(self.control(child, body=False)))
            elif child.tag != TAG_PARA_TEXT:
                out.extend(self.lines(child))
        return out

    def paragraph(self, para: Record, *, body: bool) -> tuple[str, list, int | None]:
        """(text with its number, nested items, heading level or None) of one paragraph."""
        self.out._tick()
        texts: list[str] = []
        items: list = []
        for child in para.children:
            if child.tag == TAG_PARA_TEXT:
                texts.append(decode_para_text(child.payload))
            elif child.tag == TAG_CTRL_HEADER:
                items.extend(self.control(child, body=body))
        text = "".join(texts).strip()
        heading_level: int | None = None
        shape = self._shape(para)
        if shape is not None and text and shape.head in (HEAD_OUTLINE, HEAD_NUMBER):
            if shape.head == HEAD_OUTLINE:
                numbering = self.styles.numbering(self.outline_id) or self._fallback
                heading_level = shape.level if body else None
            else:
                numbering = self.styles.numbering(shape.numbering_id) or self._fallback
            number = numbering.next(shape.level)
            if number:
                text = f"{number} {text}"
        return text, items, heading_level

    def _shape(self, para: Record) -> ParaShape | None:
        if len(para.payload) < 10:
            return None
        (shape_id,) = struct.unpack_from("<H", para.payload, 8)
        shapes = self.styles.para_shapes
        return shapes[shape_id] if shape_id < len(shapes) else None

    def control(self, ctrl: Record, *, body: bool) -> list:
        cid = control_id(ctrl)
        if cid in _SKIP_CONTROL_IDS:
            return []
        if cid == "secd":
            if len(ctrl.payload) >= 20:
                (outline_id,) = struct.unpack_from("<H", ctrl.payload, 18)
                if outline_id:
                    self.outline_id = outline_id
            return []
        if cid == "tbl ":
            rows, caption = self.table(ctrl)
            if body:
                return [(rows, caption)]
            return caption + rows
        return self.lines(ctrl)

    def table(self, ctrl: Record) -> tuple[list[str], list[str]]:
        """(rows as lines, caption lines): each cell once, at its row and column address."""
        caption: list[str] = []
        cells: list[_Cell] = []
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
                cells.append(_Cell(row, col, current))
            elif child.tag == TAG_PARA_HEADER:
                target = current if current is not None else caption
                text, items, _ = self.paragraph(child, body=False)
                if text.strip():
                    target.append(text)
                target.extend(item_lines(items))
            elif child.tag == TAG_CTRL_HEADER:
                (current if current is not None else caption).extend(item_lines(self.control(child, body=False)))
        rows: dict[int, list[_Cell]] = {}
        for cell in cells:
            rows.setdefault(cell.row, []).append(cell)
        out = []
        for row in sorted(rows):
            line = row_line([" ".join(c.lines) for c in sorted(rows[row], key=lambda c: c.col)])
            if line:
                out.append(line)
        return out, caption


def section_text_lines(stream: bytes, budget: Budget, styles: DocStyles | None = None) -> list[str]:
    """Text lines of one decompressed BodyText/SectionN stream (all its sections' lines in order)."""
    return [line for sec in section_sections(stream, budget, styles) for line in sec.text.split("\n")]


def section_sections(
    stream: bytes, budget: Budget, styles: DocStyles | None = None, walker: _Walker | None = None
) -> list[Section]:
    """Sections (headings, paragraphs, tables) of one decompressed BodyText/SectionN stream."""
    tree = build_tree(parse_records(stream), budget.limits.max_xml_depth)
    if walker is None:
        walker = _Walker(budget, styles or DocStyles(), SectionBuilder(budget))
    start = len(walker.out.sections)
    walker.body(tree)
    walker.out.flush()
    return walker.out.sections[start:]


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


def distribution_key(payload: bytes) -> bytes:
    """The AES-128 key hidden in a DISTRIBUTE_DOC_DATA payload (256 bytes).

    Bytes 4-255 are XORed with a stream from MSVC's rand() seeded with the first 4 bytes (each
    value repeated (rand() & 15) + 1 times); the key is the 16 bytes at 4 + (seed & 15).
    """
    if len(payload) != 256:
        raise ExtractionError("corrupt distribution HWP: its document data record is not 256 bytes")
    data = bytearray(payload)
    seed = int.from_bytes(payload[:4], "little")

    def rand() -> int:
        nonlocal seed
        seed = (seed * 214013 + 2531011) & 0xFFFFFFFF
        return (seed >> 16) & 0x7FFF

    key = 0
    left = 0
    for i in range(256):
        if left == 0:
            key = rand() & 0xFF
            left = (rand() & 0xF) + 1
        if i >= 4:
            data[i] ^= key
        left -= 1
    offset = 4 + (data[0] & 0xF)
    return bytes(data[offset : offset + 16])


def decrypt_view_text(raw: bytes, what: str) -> bytes:
    """A ViewText/SectionN stream decrypted: its DISTRIBUTE_DOC_DATA record gives the key of the rest."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(raw) < 4:
        raise ExtractionError(f"corrupt distribution HWP: {what} is cut off")
    (header,) = struct.unpack_from("<I", raw, 0)
    tag, size = header & 0x3FF, header >> 20
    if tag != TAG_DISTRIBUTE_DOC_DATA or size != 256 or len(raw) < 260:
        raise ExtractionError(f"corrupt distribution HWP: {what} does not start with its document data record")
    key = distribution_key(raw[4:260])
    body = raw[260:]
    body = body[: len(body) - len(body) % 16]
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(body) + decryptor.finalize()


def extract_hwp(path: Path, budget: Budget) -> ExtractedDocument:
    """HWP 5.x file → document: sections at outline headings, tables as sections of their own."""
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
            storages: dict[str, list[tuple[int, str]]] = {"BodyText": [], "ViewText": []}
            for entry in entries:
                if len(entry) == 2 and entry[0] in storages and (m := _SECTION_STREAM.match(entry[1])):
                    storages[entry[0]].append((int(m.group(1)), "/".join(entry)))
            # A distribution document's BodyText, when present, holds only a notice; its text is in ViewText.
            distribution = header.distribution or (not storages["BodyText"] and bool(storages["ViewText"]))
            numbered = storages["ViewText"] if distribution else storages["BodyText"]
            if not numbered:
                raise ExtractionError("corrupt HWP: it has no BodyText sections")
            title = _summary_title(ole)
            file_size = path.stat().st_size
            styles = _doc_styles(ole, header, budget)
            builder = SectionBuilder(budget)
            walker = _Walker(budget, styles, builder)
            for _, name in sorted(numbered):
                budget.check_time()
                if ole.get_size(name) > file_size:
                    raise ExtractionError(f"corrupt HWP: stream {name} is larger than the file")
                raw = ole.openstream(name).read()
                if distribution:
                    raw = decrypt_view_text(raw, name)
                stream = inflate(raw, budget, name) if header.compressed else raw
                if not header.compressed:
                    budget.take(len(raw), name)
                section_sections(stream, budget, walker=walker)
            sections = builder.finish()
        except ExtractionError:
            raise
        except Exception as exc:  # damaged sector chains surface as OSError/IndexError/struct.error in olefile
            raise ExtractionError(f"corrupt HWP: {type(exc).__name__} while reading the OLE container") from exc
    finally:
        ole.close()
    if not sections:
        raise ExtractionError("no text: the HWP document's body is empty")
    return ExtractedDocument(media_type=HWP, sections=sections, title=title)


def _doc_styles(ole, header: FileHeader, budget: Budget) -> DocStyles:
    """DocInfo's paragraph shapes and numberings; an unreadable DocInfo only costs the headings."""
    try:
        if not ole.exists("DocInfo") or ole.get_size("DocInfo") > budget.limits.max_uncompressed_bytes:
            return DocStyles()
        raw = ole.openstream("DocInfo").read()
        stream = inflate(raw, budget, "DocInfo") if header.compressed else raw
        return parse_doc_info(stream, header.version)
    except ExtractionError as exc:
        if "bomb" in exc.message or "limit" in exc.message or "longer than" in exc.message:
            raise
        return DocStyles()
    except Exception:
        return DocStyles()


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
