"""Builders of small sample documents for the extractor tests (DOCX, HWPX, HWP 5, PDF), written by hand
from the public format specifications so the tests need no office software and no third-party files.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
import zipfile
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

# --------------------------------------------------------------------------- DOCX

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
<Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/>
<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>
</Types>"""
_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>
</Relationships>"""
_STYLES = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="{W_NS}">
<w:style w:type="paragraph" w:default="1" w:styleId="a"><w:name w:val="Normal"/></w:style>
<w:style w:type="paragraph" w:styleId="1"><w:name w:val="heading 1"/><w:basedOn w:val="a"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="2"><w:name w:val="heading 2"/><w:basedOn w:val="a"/></w:style>
<w:style w:type="paragraph" w:styleId="MyHeading"><w:name w:val="My Heading"/><w:basedOn w:val="2"/></w:style>
</w:styles>"""


def docx_paragraph(text: str, style: str | None = None) -> str:
    ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>'


def docx_table(rows: list[list[str]]) -> str:
    body = "".join(
        "<w:tr>" + "".join(f"<w:tc>{docx_paragraph(cell)}</w:tc>" for cell in row) + "</w:tr>" for row in rows
    )
    return f"<w:tbl><w:tblPr/>{body}</w:tbl>"


def docx_document_xml(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<w:document xmlns:w="{W_NS}" '
        f'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        f"<w:body>{body}<w:sectPr/></w:body></w:document>"
    )


def build_docx(
    body: str,
    *,
    title: str | None = "시험 문서",
    document_xml: bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """A minimal DOCX package whose word/document.xml body is `body` (raw WordprocessingML)."""
    core = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">'
        + (f"<dc:title>{escape(title)}</dc:title>" if title else "")
        + "</cp:coreProperties>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("word/document.xml", document_xml if document_xml is not None else docx_document_xml(body))
        zf.writestr("word/styles.xml", _STYLES)
        zf.writestr("docProps/core.xml", core)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------- HWPX

HP_NS = "http://www.hancom.co.kr/hwpml/2011/paragraph"
HS_NS = "http://www.hancom.co.kr/hwpml/2011/section"


def hwpx_paragraph(*runs: str) -> str:
    """An hp:p whose runs are raw hp:run inner XML or plain strings (wrapped in hp:t)."""
    body = "".join(r if r.startswith("<") else f"<hp:t>{escape(r)}</hp:t>" for r in runs)
    return f'<hp:p paraPrIDRef="0" styleIDRef="0"><hp:run charPrIDRef="0">{body}</hp:run></hp:p>'


def hwpx_table(rows: list[list[str]]) -> str:
    trs = []
    for r, row in enumerate(rows):
        tcs = "".join(
            f'<hp:tc><hp:subList>{hwpx_paragraph(cell)}</hp:subList><hp:cellAddr colAddr="{c}" rowAddr="{r}"/></hp:tc>'
            for c, cell in enumerate(row)
        )
        trs.append(f"<hp:tr>{tcs}</hp:tr>")
    return f'<hp:tbl rowCnt="{len(rows)}" colCnt="{len(rows[0])}"><hp:sz width="1" height="1"/>{"".join(trs)}</hp:tbl>'


def hwpx_section_xml(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>'
        f'<hs:sec xmlns:hs="{HS_NS}" xmlns:hp="{HP_NS}">{body}</hs:sec>'
    )


def build_hwpx(
    sections: list[str | bytes],
    *,
    title: str = "시험",
    spine_order: list[int] | None = None,
    section_names: list[str] | None = None,
    extra: dict[str, bytes] | None = None,
    with_hpf: bool = True,
    header: bytes | None = None,
) -> bytes:
    """An HWPX package: mimetype first (stored), container.xml, content.hpf with a spine, section XML."""
    names = section_names or [f"Contents/section{i}.xml" for i in range(len(sections))]
    order = spine_order if spine_order is not None else list(range(len(sections)))
    items = "".join(f'<opf:item id="s{i}" href="{n}" media-type="application/xml"/>' for i, n in enumerate(names))
    spine = "".join(f'<opf:itemref idref="s{i}"/>' for i in order)
    hpf = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>'
        '<opf:package xmlns:opf="http://www.idpf.org/2007/opf/"><opf:metadata>'
        f"<opf:title>{escape(title)}</opf:title></opf:metadata>"
        f'<opf:manifest><opf:item id="header" href="Contents/header.xml" media-type="application/xml"/>{items}'
        f'</opf:manifest><opf:spine><opf:itemref idref="header"/>{spine}</opf:spine></opf:package>'
    )
    container = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>'
        '<ocf:container xmlns:ocf="urn:oasis:names:tc:opendocument:xmlns:container"><ocf:rootfiles>'
        '<ocf:rootfile full-path="Contents/content.hpf" media-type="application/hwpml-package+xml"/>'
        "</ocf:rootfiles></ocf:container>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/hwp+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr(
            "version.xml",
            '<?xml version="1.0" encoding="UTF-8"?><hv:HCFVersion '
            'xmlns:hv="http://www.hancom.co.kr/hwpml/2011/version" major="5"/>',
        )
        zf.writestr("META-INF/container.xml", container)
        if with_hpf:
            zf.writestr("Contents/content.hpf", hpf)
        zf.writestr(
            "Contents/header.xml",
            header
            or '<?xml version="1.0" encoding="UTF-8"?><hh:head xmlns:hh="http://www.hancom.co.kr/hwpml/2011/head"/>',
        )
        for name, sec in zip(names, sections, strict=True):
            zf.writestr(name, sec)
        zf.writestr("Scripts/sourceScripts.js", "throw new Error('never run');")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------- HWP 5 records

TAG_PARA_HEADER, TAG_PARA_TEXT, TAG_CTRL_HEADER, TAG_LIST_HEADER, TAG_TABLE = 66, 67, 71, 72, 77


def record(tag: int, level: int, payload: bytes) -> bytes:
    """One record: header (tag 10 bits, level 10 bits, size 12 bits; 0xFFF + UINT32 for large payloads)."""
    if len(payload) >= 0xFFF:
        return struct.pack("<II", tag | level << 10 | 0xFFF << 20, len(payload)) + payload
    return struct.pack("<I", tag | level << 10 | len(payload) << 20) + payload


def control(code: int, ctrl_id: str = "    ") -> str:
    """An inline/extended control as 8 WCHARs: code, 4-byte id (as 2 WCHARs), 4 WCHARs of data, code."""
    raw = ctrl_id[::-1].encode("latin-1")
    return chr(code) + raw.decode("utf-16-le") + "\x00\x00\x00\x00" + chr(code)


def para_records(text: str, level: int = 0, children: bytes = b"", shape: int = 0) -> bytes:
    """PARA_HEADER (with para shape id `shape`) + PARA_TEXT (text + paragraph end 13) + the paragraph's control records."""
    payload = (text + "\r").encode("utf-16-le", errors="surrogatepass")
    header = struct.pack("<IIHBB", len(text) + 1, 0, shape, 0, 0)
    return record(TAG_PARA_HEADER, level, header) + record(TAG_PARA_TEXT, level + 1, payload) + children


def table_records(rows: list[list[str]], level: int = 0, before: str = "", after: str = "") -> bytes:
    """A paragraph holding a table control ('tbl '), its TABLE record and one LIST_HEADER per cell."""
    n_rows, n_cols = len(rows), len(rows[0])
    inner = record(TAG_CTRL_HEADER, level + 1, b" lbt" + b"\x00" * 40)
    inner += record(TAG_TABLE, level + 2, struct.pack("<IHH", 0x04000006, n_rows, n_cols) + b"\x00" * 18)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            header = struct.pack("<HHIHHHH", 1, 0, 0x20, c, r, 1, 1) + b"\x00" * 22
            inner += record(TAG_LIST_HEADER, level + 2, header)
            inner += para_records(cell, level + 2)
    return para_records(before + control(11, "tbl ") + after, level, inner)


# --------------------------------------------------------------------------- OLE compound file (CFB v3)

_FREE, _END, _FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
_NOSTREAM = 0xFFFFFFFF


def build_cfb(streams: dict[str, bytes]) -> bytes:
    """A minimal OLE compound file (version 3, 512-byte sectors, mini stream for streams < 4096 bytes).

    `streams` maps paths like 'BodyText/Section0' to contents; one level of storages is supported.
    """
    sector = 512
    fat: list[int] = []
    sectors: list[bytes] = []

    def alloc(data: bytes) -> int:
        if not data:
            return _END
        start = len(sectors)
        count = (len(data) + sector - 1) // sector
        for i in range(count):
            sectors.append(data[i * sector : (i + 1) * sector].ljust(sector, b"\x00"))
            fat.append(start + i + 1 if i + 1 < count else _END)
        return start

    # Directory tree: root (0) → storages and streams; storages → streams.
    tree: dict[str, dict[str, bytes]] = {}
    top_streams: dict[str, bytes] = {}
    for path, data in streams.items():
        if "/" in path:
            storage, name = path.split("/", 1)
            tree.setdefault(storage, {})[name] = data
        else:
            top_streams[path] = data

    mini = bytearray()
    minifat: list[int] = []
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "child": _NOSTREAM}]

    def place(data: bytes) -> int:
        if len(data) >= 4096:
            return alloc(data)
        if not data:
            return _END
        start = len(mini) // 64
        count = (len(data) + 63) // 64
        mini.extend(data.ljust(count * 64, b"\x00"))
        for i in range(count):
            minifat.append(start + i + 1 if i + 1 < count else _END)
        return start

    def key(name: str) -> tuple[int, str]:
        return (len(name), name.upper())

    def add_children(parent: int, children: list[int]) -> None:
        children.sort(key=lambda i: key(entries[i]["name"]))
        if not children:
            return
        entries[parent]["child"] = children[0]
        for a, b in itertools.pairwise(children):
            entries[a]["right"] = b

    root_children = []
    for name, data in top_streams.items():
        entries.append({"name": name, "type": 2, "start": place(data), "size": len(data)})
        root_children.append(len(entries) - 1)
    for storage, members in tree.items():
        entries.append({"name": storage, "type": 1, "child": _NOSTREAM})
        sid = len(entries) - 1
        root_children.append(sid)
        kids = []
        for name, data in members.items():
            entries.append({"name": name, "type": 2, "start": place(data), "size": len(data)})
            kids.append(len(entries) - 1)
        add_children(sid, kids)
    add_children(0, root_children)

    entries[0]["start"] = alloc(bytes(mini)) if mini else _END
    entries[0]["size"] = len(mini)
    minifat_bytes = struct.pack(f"<{len(minifat)}I", *minifat) if minifat else b""
    if minifat_bytes:
        minifat_bytes = minifat_bytes.ljust(-(-len(minifat_bytes) // sector) * sector, b"\xff")
    first_minifat = alloc(minifat_bytes)
    n_minifat = len(minifat_bytes) // sector

    dir_bytes = bytearray()
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\x00\x00"
        dir_bytes += struct.pack(
            "<64sHBBIII16sIQQIQ",
            name,
            len(name),
            e["type"],
            1,
            e.get("left", _NOSTREAM),
            e.get("right", _NOSTREAM),
            e.get("child", _NOSTREAM),
            b"\x00" * 16,
            0,
            0,
            0,
            e.get("start", _END if e["type"] != 1 else 0),
            e.get("size", 0),
        )
    while len(dir_bytes) % sector:
        dir_bytes += struct.pack(
            "<64sHBBIII16sIQQIQ", b"", 0, 0, 0, _NOSTREAM, _NOSTREAM, _NOSTREAM, b"\x00" * 16, 0, 0, 0, 0, 0
        )
    first_dir = alloc(bytes(dir_bytes))

    n_fat = 1
    while len(sectors) + n_fat > n_fat * (sector // 4):
        n_fat += 1
    assert n_fat <= 109, "sample too large for a header-only DIFAT"
    fat_start = len(sectors)
    fat_ids = list(range(fat_start, fat_start + n_fat))
    fat.extend([_FATSECT] * n_fat)
    fat.extend([_FREE] * (n_fat * (sector // 4) - len(fat)))
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    for i in range(n_fat):
        sectors.append(fat_bytes[i * sector : (i + 1) * sector])

    difat = fat_ids + [_FREE] * (109 - n_fat)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\x00" * 16,
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        b"\x00" * 6,
        0,
        n_fat,
        first_dir,
        0,
        4096,
        first_minifat if n_minifat else _END,
        n_minifat,
        _END,
        0,
        *difat,
    )
    return header + b"".join(sectors)


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def para_shape_record(head: int = 0, level: int = 0, numbering_id: int = 0) -> bytes:
    """PARA_SHAPE (tag 25): property bits 23-24 head kind (1 outline, 2 number), 25-27 level; numbering id at 30."""
    payload = struct.pack("<I", head << 23 | level << 25) + b"\x00" * 26 + struct.pack("<H", numbering_id)
    return record(25, 0, payload + b"\x00" * 22)


def numbering_record(templates: list[str], shapes: list[int] | None = None, start: int = 1) -> bytes:
    """NUMBERING (tag 30): 7 levels of (12-byte head info with the number shape in bits 5-9, format string)."""
    out = b""
    for i in range(7):
        template = templates[i] if i < len(templates) else ""
        shape = (shapes or [])[i] if i < len(shapes or []) else 0
        out += struct.pack("<IHHIH", shape << 5, 0, 0, 0, len(template)) + template.encode("utf-16-le")
    return record(30, 0, out + struct.pack("<H", start) + struct.pack("<7I", *[start] * 7))


def secd_records(outline_id: int = 1, level: int = 1) -> bytes:
    payload = b"dces" + struct.pack("<IHHHIH", 0, 0, 0, 0, 8000, outline_id) + b"\x00" * 20
    return record(TAG_CTRL_HEADER, level, payload)


def build_hwp(
    section_streams: list[bytes],
    *,
    flags: int = 1,
    version: int = 0x05000300,
    title: str | None = None,
    raw_sections: list[bytes] | None = None,
    body_storage: str = "BodyText",
    doc_info: bytes = b"",
) -> bytes:
    """An HWP 5 file: FileHeader, DocInfo, BodyText/SectionN (deflated when flags bit 0 is set)."""
    header = b"HWP Document File".ljust(32, b"\x00") + struct.pack("<II", version, flags)
    header = header.ljust(256, b"\x00")
    compress = bool(flags & 1)
    streams = {"FileHeader": header, "DocInfo": deflate_raw(doc_info) if compress else doc_info}
    bodies = raw_sections if raw_sections is not None else [deflate_raw(s) if compress else s for s in section_streams]
    for i, body in enumerate(bodies):
        streams[f"{body_storage}/Section{i}"] = body
    if title is not None:
        streams["\x05HwpSummaryInformation"] = _summary_info(title)
    return build_cfb(streams)


def distribution_record(key: bytes, seed: int = 0x1234ABCD) -> bytes:
    """A DISTRIBUTE_DOC_DATA record (tag 28, 256 bytes) that hides `key` (16 bytes) the way Hangul does:
    bytes 4-255 XORed with MSVC rand() values seeded by the first 4 bytes, the key at 4 + (seed & 15)."""
    data = bytearray(seed.to_bytes(4, "little") + bytes((7 * i + 3) & 0xFF for i in range(252)))
    offset = 4 + (data[0] & 0xF)
    data[offset : offset + 16] = key
    state = seed
    value = left = 0
    for i in range(256):
        if left == 0:
            state = (state * 214013 + 2531011) & 0xFFFFFFFF
            value = (state >> 16) & 0x7FFF & 0xFF
            state = (state * 214013 + 2531011) & 0xFFFFFFFF
            left = (((state >> 16) & 0x7FFF) & 0xF) + 1
        if i >= 4:
            data[i] ^= value
        left -= 1
    return record(28, 0, bytes(data))


def build_distribution_hwp(
    section_streams: list[bytes], *, key: bytes = b"0123456789abcdef", flags: int = 1 | 4
) -> bytes:
    """A 배포용 HWP: ViewText/SectionN = distribution record + AES-128-ECB(deflated section, zero-padded)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    bodies = []
    for stream in section_streams:
        plain = deflate_raw(stream) if flags & 1 else stream
        plain += b"\x00" * (-len(plain) % 16)
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        bodies.append(distribution_record(key) + encryptor.update(plain) + encryptor.finalize())
    notice = para_records("이 문서는 상위 버전의 배포용 문서입니다.")
    header = b"HWP Document File".ljust(32, b"\x00") + struct.pack("<II", 0x05000300, flags)
    streams = {"FileHeader": header.ljust(256, b"\x00"), "DocInfo": deflate_raw(b"") if flags & 1 else b""}
    streams["BodyText/Section0"] = deflate_raw(notice) if flags & 1 else notice
    for i, body in enumerate(bodies):
        streams[f"ViewText/Section{i}"] = body
    return build_cfb(streams)


def _summary_info(title: str) -> bytes:
    value = (title + "\x00").encode("utf-16-le")
    prop = struct.pack("<II", 0x1F, len(title) + 1) + value
    prop = prop.ljust(-(-len(prop) // 4) * 4, b"\x00")
    section = struct.pack("<IIII", 8 + 8 + len(prop), 1, 2, 16) + prop
    fmtid = bytes.fromhex("e0859ff2f94f6810ab9108002b27b3d9")
    return struct.pack("<HHI16sI", 0xFFFE, 0, 0x00020005, b"\x00" * 16, 1) + fmtid + struct.pack("<I", 48) + section


# --------------------------------------------------------------------------- PDF


def build_pdf(
    pages: list,
    *,
    korean: bool = False,
    encrypt_user_password: str | None = None,
    encrypt_owner_password: str | None = None,
    title: str | None = None,
    outline: list[tuple[int, str, int]] | None = None,
) -> bytes:
    """A PDF with one text line per page (None: a page with only a drawn rectangle, no text), or per
    page a list of runs (x, y, text[, size[, character spacing]]) drawn where they say (points from
    the bottom left).

    korean=True writes the text with a Type0 CID font (Adobe-Korea1, UniKS-UCS2-H, not embedded) and a
    ToUnicode CMap, so the text layer is Korean. Encryption uses the standard security handler, RC4 40-bit
    (revision 2), enough to exercise password detection. outline: bookmarks (level 0-based, title,
    0-based page index) in document order.
    """
    objects: list[bytes] = []  # index i → object number i + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # placeholder, filled below
    pages_obj = add(b"")
    if korean:
        tounicode = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def /CMapType 2 def
1 begincodespacerange <0000> <FFFF> endcodespacerange
1 beginbfrange <0000> <FFFF> <0000> endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end"""
        tu = add(b"<< /Length %d >>\nstream\n" % len(tounicode) + tounicode + b"\nendstream")
        desc = add(
            b"<< /Type /FontDescriptor /FontName /HYSMyeongJo-Medium /Flags 6 /FontBBox [0 -148 1001 880]"
            b" /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 60 >>"
        )
        cid = add(
            b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /HYSMyeongJo-Medium"
            b" /CIDSystemInfo << /Registry (Adobe) /Ordering (Korea1) /Supplement 1 >>"
            b" /FontDescriptor %d 0 R /DW 1000 >>" % desc
        )
        font = add(
            b"<< /Type /Font /Subtype /Type0 /BaseFont /HYSMyeongJo-Medium /Encoding /UniKS-UCS2-H"
            b" /DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (cid, tu)
        )
    else:
        font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    page_ids = []
    contents = []

    def encode_text(text: str) -> bytes:
        if korean:
            return b"<" + text.encode("utf-16-be").hex().upper().encode() + b">"
        return b"(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1") + b")"

    for text in pages:
        if isinstance(text, list):
            content = b"".join(
                b"BT /F1 %g Tf %g Tc %g %g Td %s Tj ET\n"
                % (run[3] if len(run) > 3 else 10, run[4] if len(run) > 4 else 0, run[0], run[1], encode_text(run[2]))
                for run in text
            )
        elif text is None:
            content = b"0.5 g 100 100 200 200 re f"
        elif korean:
            content = b"BT /F1 18 Tf 72 720 Td <" + text.encode("utf-16-be").hex().upper().encode() + b"> Tj ET"
        else:
            safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
            content = b"BT /F1 18 Tf 72 720 Td (" + safe + b") Tj ET"
        cobj = add(content)  # stream wrapper added at serialisation (so it can be encrypted)
        contents.append(cobj)
        page_ids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                b" /Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_obj, cobj, font)
            )
        )
    outlines = _pdf_outline(outline, page_ids, add, objects) if outline else None
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R%s >>" % (
        pages_obj,
        b" /Outlines %d 0 R" % outlines if outlines else b"",
    )
    kids = b" ".join(b"%d 0 R" % p for p in page_ids)
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info = add(b"<< /Title (" + title.encode("latin-1") + b") >>") if title else None

    file_id = hashlib.md5(b"saekin-test-pdf").digest()
    key = None
    encrypt_obj = None
    if encrypt_user_password is not None or encrypt_owner_password is not None:
        user = (encrypt_user_password or "").encode("latin-1")
        owner = (encrypt_owner_password or encrypt_user_password or "").encode("latin-1")
        p_value = -44  # print/copy allowed bits; the value itself is irrelevant for these tests
        o_entry = _rc4(hashlib.md5(_pad(owner)).digest()[:5], _pad(user))
        key = hashlib.md5(_pad(user) + o_entry + struct.pack("<i", p_value) + file_id).digest()[:5]
        u_entry = _rc4(key, _PDF_PAD)
        encrypt_obj = add(
            b"<< /Filter /Standard /V 1 /R 2 /O <"
            + o_entry.hex().encode()
            + b"> /U <"
            + u_entry.hex().encode()
            + b"> /P %d >>" % p_value
        )

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        if number in contents:
            data = body
            if key is not None:
                data = _rc4(_object_key(key, number), data)
            body = b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
        elif key is not None and number == info and title:
            enc = _rc4(_object_key(key, number), title.encode("latin-1"))
            body = b"<< /Title <" + enc.hex().encode() + b"> >>"
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = b"<< /Size %d /Root %d 0 R /ID [<%s> <%s>]" % (
        len(objects) + 1,
        catalog,
        file_id.hex().encode(),
        file_id.hex().encode(),
    )
    if info:
        trailer += b" /Info %d 0 R" % info
    if encrypt_obj:
        trailer += b" /Encrypt %d 0 R" % encrypt_obj
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _pdf_outline(items: list[tuple[int, str, int]], page_ids: list[int], add, objects: list[bytes]) -> int:
    """Outline dictionaries for (level, title, page) items; titles as UTF-16BE with a byte order mark."""
    root = add(b"")
    ids = [add(b"") for _ in items]
    parents: list[int] = []
    parent_of: list[int] = []
    for i, (level, _, _) in enumerate(items):
        del parents[level:]
        parent_of.append(parents[-1] if parents else -1)
        parents.append(i)
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(parent_of):
        children.setdefault(parent, []).append(i)
    for i, (_, title, page) in enumerate(items):
        siblings = children[parent_of[i]]
        at = siblings.index(i)
        parent_obj = ids[parent_of[i]] if parent_of[i] >= 0 else root
        entry = b"<< /Title <FEFF%s> /Parent %d 0 R /Dest [%d 0 R /XYZ 0 792 0]" % (
            title.encode("utf-16-be").hex().upper().encode(),
            parent_obj,
            page_ids[page],
        )
        if at > 0:
            entry += b" /Prev %d 0 R" % ids[siblings[at - 1]]
        if at + 1 < len(siblings):
            entry += b" /Next %d 0 R" % ids[siblings[at + 1]]
        kids = children.get(i, [])
        if kids:
            entry += b" /First %d 0 R /Last %d 0 R /Count %d" % (ids[kids[0]], ids[kids[-1]], len(kids))
        objects[ids[i] - 1] = entry + b" >>"
    top = children.get(-1, [])
    objects[root - 1] = b"<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count %d >>" % (
        ids[top[0]],
        ids[top[-1]],
        len(top),
    )
    return root


_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _pad(password: bytes) -> bytes:
    return (password + _PDF_PAD)[:32]


def _object_key(key: bytes, number: int) -> bytes:
    return hashlib.md5(key + struct.pack("<I", number)[:3] + b"\x00\x00").digest()[: min(16, len(key) + 5)]


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)
