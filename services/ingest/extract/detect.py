"""Media type from content: magic bytes, ZIP members, OLE streams. Names only pick a text flavour."""

from __future__ import annotations

import codecs
import io
import re
import struct
import zipfile
from pathlib import Path, PurePath

from services.errors import ExtractionError, UnsupportedMediaType

from ._types import (
    DOCX,
    HWP,
    HWPML,
    HWPX,
    PDF,
    PPTX,
    SUPPORTED_MEDIA_TYPES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    XLSX,
)

HEAD_BYTES = 8192
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")

EXTENSION_TYPES = {
    ".txt": TEXT_PLAIN,
    ".text": TEXT_PLAIN,
    ".log": TEXT_PLAIN,
    ".csv": TEXT_PLAIN,
    ".tsv": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".mdown": TEXT_MARKDOWN,
    ".mkd": TEXT_MARKDOWN,
    ".htm": TEXT_HTML,
    ".html": TEXT_HTML,
    ".xhtml": TEXT_HTML,
    ".pdf": PDF,
    ".docx": DOCX,
    ".hwpx": HWPX,
    ".hwp": HWP,
    ".hml": HWPML,
    ".xlsx": XLSX,
    ".xlsm": XLSX,
    ".pptx": PPTX,
}
DECLARED_ALIASES = {
    "text/x-markdown": TEXT_MARKDOWN,
    "text/md": TEXT_MARKDOWN,
    "application/xhtml+xml": TEXT_HTML,
    "application/haansofthwp": HWP,
    "application/vnd.hancom.hwp": HWP,
    "application/x-hwp": HWP,
    "application/vnd.hancom.hwpx": HWPX,
    "application/haansofthwpx": HWPX,
    "application/x-hwpx": HWPX,
    "application/vnd.hancom.hml": HWPML,
    "application/haansofthml": HWPML,
    "application/vnd.ms-excel.sheet.macroenabled.12": XLSX,
}
# Binary formats recognised only to name them in the refusal.
_KNOWN_BINARIES: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"BM", "BMP image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"\x7fELF", "ELF executable"),
    (b"MZ", "Windows executable"),
    (b"{\\rtf", "RTF document"),
    (b"%!PS", "PostScript document"),
    (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"ID3", "MP3 audio"),
    (b"\x00\x00\x01\xba", "MPEG video"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"HWP Document File V3", "HWP 3.0 document (save it as HWP 5 or HWPX)"),
]
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|title|meta|script|style|div|p|h[1-6]|table|a|br|iframe|font|b)[\s>/]",
    re.I | re.S,
)
_HTML_STRONG = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S)
# HWPML: an XML declaration (or none), comments, then the HWPML root element.
_HWPML_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<HWPML[\s>]", re.S)
# XML that is not a document type we read: an XML declaration, a DOCTYPE, or a root element with a
# namespace declaration (RSS, SVG, XML data, office XML parts…). Its tags are not text.
_XML_START = re.compile(
    rb"^\s*(?:<\?xml[\s?]|(?:<!--.*?-->\s*)*<!DOCTYPE\s|(?:<!--.*?-->\s*)*<[A-Za-z_][\w.:-]*\s[^>]*\bxmlns(?::\w+)?\s*=)",
    re.S,
)
_XML_ROOT = re.compile(rb"<([A-Za-z_][\w.:-]*)[\s/>]")


def _hint(filename: str | None, declared: str | None) -> str | None:
    """The media type a name or a declared Content-Type suggests (only ever used as a tie-breaker)."""
    if declared:
        base = declared.split(";", 1)[0].strip().lower()
        base = DECLARED_ALIASES.get(base, base)
        if base in SUPPORTED_MEDIA_TYPES:
            return base
    if filename:
        return EXTENSION_TYPES.get(PurePath(filename).suffix.lower())
    return None


def _hint_from_name_first(filename: str | None, declared: str | None) -> str | None:
    if filename and (ext := EXTENSION_TYPES.get(PurePath(filename).suffix.lower())):
        return ext
    return _hint(None, declared)


def detect_media_type(head: bytes, *, filename: str | None = None, declared: str | None = None) -> str:
    """Media type of a document from its first bytes (a few KiB; the whole file for small files).

    Exact for PDF and text formats. ZIP and OLE containers are classified from the member names and
    streams visible in `head`; pass the file to detect_media_type_path for a certain answer there.
    Raises UnsupportedMediaType for anything else, ExtractionError for an empty file.
    """
    if not head:
        raise ExtractionError("empty file (0 bytes)")
    if b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(ZIP_MAGICS):
        kind = _zip_kind_from_bytes(head)
        if kind:
            return kind
        return _container_fallback(
            "ZIP archive",
            (DOCX, HWPX, XLSX, PPTX),
            filename,
            declared,
            "use detect_media_type_path to look inside the whole archive",
        )
    if head.startswith(OLE_MAGIC):
        if "FileHeader".encode("utf-16-le") in head or b"HWP Document File" in head:
            return HWP
        return _container_fallback(
            "OLE compound file", (HWP,), filename, declared, "use detect_media_type_path to look inside the whole file"
        )
    return _detect_non_container(head, filename, declared)


def detect_media_type_path(path: Path, *, filename: str | None = None, declared: str | None = None) -> str:
    """Media type of the document stored at `path`, opening ZIP and OLE containers to look inside."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    return _detect_whole(head, path, filename, declared)


def detect_media_type_data(data: bytes, *, filename: str | None = None, declared: str | None = None) -> str:
    """Media type of a whole document held in memory (an upload), opening ZIP and OLE containers
    to look inside without writing it to a file."""
    return _detect_whole(data[:HEAD_BYTES], data, filename, declared)


def _detect_whole(head: bytes, whole: Path | bytes, filename: str | None, declared: str | None) -> str:
    if not head:
        raise ExtractionError("empty file (0 bytes)")
    if head.startswith(ZIP_MAGICS):
        return _zip_kind_from_path(whole, head, filename, declared)
    if head.startswith(OLE_MAGIC):
        return _ole_kind_from_path(whole, head, filename, declared)
    return detect_media_type(head, filename=filename, declared=declared)


def _detect_non_container(head: bytes, filename: str | None, declared: str | None) -> str:
    for magic, name in _KNOWN_BINARIES:
        if head.startswith(magic):
            raise UnsupportedMediaType(f"unsupported file type: {name}")
    if not _looks_like_text(head):
        hint = _hint_from_name_first(filename, declared)
        claim = f" although its name or declared type says {hint}" if hint else ""
        raise UnsupportedMediaType(f"unsupported file type: unrecognised binary data{claim}")
    hint = _hint_from_name_first(filename, declared)
    sample = _ascii_view(head)
    if _HWPML_START.match(sample):
        return HWPML
    if hint != TEXT_MARKDOWN and not _HTML_STRONG.match(sample) and _XML_START.match(sample):
        root = next((m.group(1) for m in _XML_ROOT.finditer(sample) if not m.group(1).startswith(b"!")), b"")
        name = root.decode("ascii", "replace")[:40]
        raise UnsupportedMediaType(
            f"unsupported file type: XML document{f' <{name}>' if name else ''} that is not a known document"
            " type (XML is read only as XHTML, HWPML, DOCX, XLSX, PPTX or HWPX)"
        )
    if hint == TEXT_MARKDOWN:
        return TEXT_MARKDOWN
    if hint == TEXT_HTML or _HTML_STRONG.match(sample):
        return TEXT_HTML
    if hint == TEXT_PLAIN:
        return TEXT_PLAIN
    if _HTML_START.match(sample):
        return TEXT_HTML
    return TEXT_PLAIN


def _ascii_view(head: bytes) -> bytes:
    """Head bytes with a BOM removed and UTF-16 turned into bytes, for ASCII pattern matching."""
    if head.startswith(codecs.BOM_UTF8):
        return head[3:]
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return head[2:].decode(codec, errors="ignore").encode("utf-8", errors="ignore")
    return head


def _looks_like_text(head: bytes) -> bool:
    """Cheap test on the first bytes: decodable as UTF-8/UTF-16/CP949 without binary control bytes."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        body = head[2 : 2 + (len(head) - 2) // 2 * 2]
        codec = "utf-16-le" if head.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        text = body.decode(codec, errors="replace")
        return _few_controls(text)
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    if b"\x00" in head:
        from .textfmt import plausible_utf16  # UTF-16 without a byte order mark

        return plausible_utf16(head, "utf-16-le") or plausible_utf16(head, "utf-16-be")
    # Incremental decoders: a multibyte character cut at the end of head is fine.
    for codec in ("utf-8", "cp949"):
        try:
            return _few_controls(codecs.getincrementaldecoder(codec)().decode(head, final=False))
        except UnicodeDecodeError:
            pass
    for codec in ("utf-8", "cp949"):  # a stray byte or two: each U+FFFD counts in _few_controls
        if _few_controls(codecs.getincrementaldecoder(codec)(errors="replace").decode(head, final=False)):
            return True
    return _charset_normalizer_says_text(head)


def _few_controls(text: str) -> bool:
    bad = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b") or ch in "\x7f\ufffd")
    return bad <= max(2, len(text) // 50)


def _charset_normalizer_says_text(head: bytes) -> bool:
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        return False
    return _few_controls(str(best))


def _zip_kind_from_bytes(head: bytes) -> str | None:
    """Classify a ZIP from local file headers visible in head (mimetype member first, as HWPX writes it)."""
    pos = 0
    names: list[str] = []
    while pos + 30 <= len(head) and head[pos : pos + 4] == b"PK\x03\x04":
        (flags, method, csize, _usize, name_len, extra_len) = struct.unpack_from("<HH8xIIHH", head, pos + 6)
        name = head[pos + 30 : pos + 30 + name_len].decode("utf-8", errors="replace")
        data_at = pos + 30 + name_len + extra_len
        names.append(name)
        if name == "mimetype" and method == 0 and head[data_at : data_at + csize].strip() == b"application/hwp+zip":
            return HWPX
        if flags & 0x08:  # sizes in a data descriptor: cannot skip reliably
            break
        pos = data_at + csize
    return _classify_zip_names(names)


def _classify_zip_names(names: list[str]) -> str | None:
    lowered = [n.lower() for n in names]
    if any(n.startswith("word/") for n in lowered):
        return DOCX
    if any(n.startswith("xl/") for n in lowered):
        return XLSX
    if any(n.startswith("ppt/") for n in lowered):
        return PPTX
    if any(re.match(r"contents/section\d+\.xml$", n) for n in lowered) or "contents/content.hpf" in lowered:
        return HWPX
    return None


def _zip_kind_from_path(whole: Path | bytes, head: bytes, filename: str | None, declared: str | None) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(whole) if isinstance(whole, bytes) else whole) as zf:
            names = zf.namelist()
            if "mimetype" in names and zf.getinfo("mimetype").file_size < 256:
                try:
                    if zf.read("mimetype").strip() == b"application/hwp+zip":
                        return HWPX
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError):
                    pass
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        kind = _zip_kind_from_bytes(head)
        if kind:
            return kind  # damaged, but recognisably DOCX/HWPX: the extractor reports the damage
        return _container_fallback(
            "ZIP archive", (DOCX, HWPX, XLSX, PPTX), filename, declared, "it is corrupt or truncated"
        )
    kind = _classify_zip_names(names)
    if kind:
        return kind
    what = _describe_other_zip(names)
    raise UnsupportedMediaType(
        f"unsupported file type: {what} (only DOCX, XLSX, PPTX and HWPX ZIP documents are supported)"
    )


def _describe_other_zip(names: list[str]) -> str:
    lowered = [n.lower() for n in names]
    if "mimetype" in lowered and "content.xml" in lowered:
        return "OpenDocument file"
    return "ZIP archive"


def _ole_kind_from_path(whole: Path | bytes, head: bytes, filename: str | None, declared: str | None) -> str:
    import olefile

    try:
        with olefile.OleFileIO(whole if isinstance(whole, bytes) else str(whole)) as ole:
            if ole.exists("FileHeader"):
                return HWP
            if ole.exists("WordDocument"):
                what = "legacy Word document (.doc)"
            elif ole.exists("Workbook") or ole.exists("Book"):
                what = "legacy Excel workbook (.xls)"
            elif ole.exists("PowerPoint Document"):
                what = "legacy PowerPoint presentation (.ppt)"
            else:
                what = "OLE compound file"
    except Exception:  # olefile raises many exception types on damaged containers
        if "FileHeader".encode("utf-16-le") in head or b"HWP Document File" in head:
            return HWP
        return _container_fallback("OLE compound file", (HWP,), filename, declared, "it is corrupt or truncated")
    raise UnsupportedMediaType(f"unsupported file type: {what} (only HWP among OLE documents is supported)")


def _container_fallback(
    what: str, candidates: tuple[str, ...], filename: str | None, declared: str | None, why: str
) -> str:
    """A container we could not classify: trust the name if it names one of the formats it could be."""
    hint = _hint_from_name_first(filename, declared)
    if hint in candidates:
        return hint
    raise UnsupportedMediaType(f"unsupported file type: {what} that is not a recognisable document ({why})")
