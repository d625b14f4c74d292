"""Hostile input: every case ends in a clear domain error, never a crash, a hang or unbounded memory."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from services.errors import ExtractionError, SaekinError, UnsupportedMediaType
from services.ingest.extract import DOCX, HWP, HWPX, PDF, TEXT_HTML, ExtractedDocument, ExtractLimits, extract_file
from tests.extract_samples import (
    build_docx,
    build_hwp,
    build_hwpx,
    build_pdf,
    docx_document_xml,
    docx_paragraph,
    hwpx_paragraph,
    hwpx_section_xml,
    para_records,
    record,
)

LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";" if i > 1 else "&lol;") * 10}">' for i in range(1, 10))
    + "]>"
)
XXE = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.pdf", b"")
    for media_type in (None, PDF, DOCX, HWP, HWPX, TEXT_HTML):
        with pytest.raises(ExtractionError, match="empty file"):
            extract_file(path, media_type=media_type)


def test_missing_file(tmp_path):
    with pytest.raises(ExtractionError, match="cannot be read"):
        extract_file(tmp_path / "gone.pdf")


@pytest.mark.parametrize("name", ["a.pdf", "a.docx", "a.hwpx", "a.hwp", "a.txt", "a.html", "a.md"])
def test_random_bytes_with_a_known_extension(tmp_path, name):
    path = write(tmp_path, name, os.urandom(4096))
    with pytest.raises(ExtractionError, match="not a valid"):
        extract_file(path, filename=name)


@pytest.mark.parametrize("media_type", [PDF, DOCX, HWPX, HWP])
def test_random_bytes_declared_as_a_format(tmp_path, media_type):
    with pytest.raises(ExtractionError):
        extract_file(write(tmp_path, "x", os.urandom(4096)), media_type=media_type)


def test_unknown_type(tmp_path):
    with pytest.raises(UnsupportedMediaType):
        extract_file(write(tmp_path, "photo", b"\x89PNG\r\n\x1a\n" + os.urandom(200)))
    with pytest.raises(UnsupportedMediaType):
        extract_file(write(tmp_path, "a.txt", b"x"), media_type="application/vnd.ms-excel")


@pytest.mark.parametrize("kind", ["docx", "hwpx", "hwp"])
def test_truncated_containers(tmp_path, kind):
    data = {
        "docx": lambda: build_docx(docx_paragraph("문단") * 50),
        "hwpx": lambda: build_hwpx([hwpx_section_xml(hwpx_paragraph("문단") * 50)]),
        "hwp": lambda: build_hwp([para_records("문단") * 50]),
    }[kind]()
    for cut in (10, len(data) // 3, len(data) - 30):
        with pytest.raises(ExtractionError):
            extract_file(write(tmp_path, f"t.{kind}", data[:cut]), filename=f"t.{kind}")


def test_truncated_pdf_is_recovered_or_refused(tmp_path):
    data = build_pdf(["page one", "page two"])
    for cut in (9, len(data) // 2, len(data) - 40):
        try:
            doc = extract_file(write(tmp_path, "t.pdf", data[:cut]), filename="t.pdf")
        except ExtractionError:
            continue
        assert isinstance(doc, ExtractedDocument)  # PDFium rebuilds a lost xref table: a partial text is fine


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_docx_zip_bomb_by_ratio(tmp_path):
    xml = docx_document_xml(docx_paragraph("x") + " " * (8 * 2**20)).encode()  # ~1000x compressible
    with pytest.raises(ExtractionError, match="ZIP bomb"):
        extract_file(write(tmp_path, "bomb.docx", build_docx("", document_xml=xml)))


def test_docx_zip_bomb_by_total_size(tmp_path):
    padding = os.urandom(3 * 2**20)  # incompressible: ratio 1, so only the size limit can stop it
    data = build_docx(docx_paragraph("x"), extra={f"word/media/image{i}.bin": padding for i in range(4)})
    with pytest.raises(ExtractionError, match="ZIP bomb"):
        extract_file(write(tmp_path, "big.docx", data), limits=ExtractLimits(max_uncompressed_bytes=10 * 2**20))


def test_hwpx_zip_bomb(tmp_path):
    section = hwpx_section_xml(hwpx_paragraph("x") + " " * (8 * 2**20))
    with pytest.raises(ExtractionError, match="ZIP bomb"):
        extract_file(write(tmp_path, "bomb.hwpx", build_hwpx([section])))


def test_hwp_decompression_bomb(tmp_path):
    section = para_records("x") + record(99, 0, b"\x00" * (16 * 2**20))
    with pytest.raises(ExtractionError, match="bomb"):
        extract_file(write(tmp_path, "bomb.hwp", build_hwp([section])))
    with pytest.raises(ExtractionError, match="beyond the limit"):
        extract_file(
            write(tmp_path, "bomb.hwp", build_hwp([section])),
            limits=ExtractLimits(max_uncompressed_bytes=4 * 2**20, max_compression_ratio=1e9),
        )


@pytest.mark.parametrize("prolog", [LAUGHS, XXE])
def test_docx_entity_expansion_and_external_entities(tmp_path, prolog):
    xml = (
        prolog + docx_document_xml(docx_paragraph("&lol9;" if prolog is LAUGHS else "&x;")).split("\n", 1)[1]
    ).encode()
    with pytest.raises(ExtractionError, match=r"DTD|entit"):
        extract_file(write(tmp_path, "laughs.docx", build_docx("", document_xml=xml)))


def test_hwpx_entity_expansion(tmp_path):
    section = LAUGHS + '<hs:sec xmlns:hs="s" xmlns:hp="p"><hp:p><hp:run><hp:t>&lol9;</hp:t></hp:run></hp:p></hs:sec>'
    with pytest.raises(ExtractionError, match=r"DTD|entit"):
        extract_file(write(tmp_path, "laughs.hwpx", build_hwpx([section])))


def test_deeply_nested_xml(tmp_path):
    deep = "<w:sdt><w:sdtContent>" * 5000 + docx_paragraph("x") + "</w:sdtContent></w:sdt>" * 5000
    xml = docx_document_xml(deep).encode()
    with pytest.raises(ExtractionError, match="nested deeper than 256"):
        extract_file(write(tmp_path, "deep.docx", build_docx("", document_xml=xml)))
    section = hwpx_section_xml("<hp:p><hp:run>" + "<hp:ctrl>" * 5000 + "</hp:ctrl>" * 5000 + "</hp:run></hp:p>")
    with pytest.raises(ExtractionError, match="nested deeper than 256"):
        extract_file(write(tmp_path, "deep.hwpx", build_hwpx([section])))


def test_nesting_within_the_limit_is_fine(tmp_path):
    deep = "<w:sdt><w:sdtContent>" * 100 + docx_paragraph("깊은 문단") + "</w:sdtContent></w:sdt>" * 100
    doc = extract_file(write(tmp_path, "ok.docx", build_docx("", document_xml=docx_document_xml(deep).encode())))
    assert doc.text == "깊은 문단"


def test_deeply_nested_hwp_records(tmp_path):
    section = para_records("x") + b"".join(record(99, level, b"") for level in range(1, 1000))
    with pytest.raises(ExtractionError, match="nested deeper"):
        extract_file(write(tmp_path, "deep.hwp", build_hwp([section])))


def test_deeply_nested_html(tmp_path):
    page = "<html><body>" + "<div>" * 100_000 + "깊은 글" + "</div>" * 100_000 + "</body></html>"
    with pytest.raises(ExtractionError, match="HTML nested deeper than 1024"):
        extract_file(write(tmp_path, "deep.html", page.encode()))
    unclosed = "<html><body><ul>" + "<li><p>항목" * 20_000 + "</ul>"  # implicitly closed tags do not count
    assert extract_file(write(tmp_path, "list.html", unclosed.encode())).text.count("항목") == 20_000


def test_html_walk_does_not_recurse(tmp_path):
    page = "<html><body>" + "<span>" * 1000 + "깊은 글" + "</span>" * 1000 + "</body></html>"
    doc = extract_file(write(tmp_path, "deep.html", page.encode()), limits=ExtractLimits(max_xml_depth=2000))
    assert doc.text == "깊은 글"


def test_malformed_xml(tmp_path):
    xml = docx_document_xml(docx_paragraph("x"))[:-20].encode()
    with pytest.raises(ExtractionError, match="malformed XML"):
        extract_file(write(tmp_path, "bad.docx", build_docx("", document_xml=xml)))


def test_docx_without_document_part(tmp_path):
    data = _zip({"[Content_Types].xml": b"<Types/>", "word/other.xml": b"<x/>"})
    with pytest.raises(ExtractionError, match="no main document"):
        extract_file(write(tmp_path, "n.docx", data))


def test_encrypted_zip_member(tmp_path):
    data = bytearray(build_docx(docx_paragraph("x")))
    # Set the 'encrypted' flag bit on every local and central header of the archive.
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        while pos != -1:
            data[pos + offset] |= 1
            pos = data.find(sig, pos + 4)
    with pytest.raises(ExtractionError, match=r"encrypted|corrupt"):
        extract_file(write(tmp_path, "enc.docx", bytes(data)))


def test_errors_are_domain_errors():
    assert issubclass(ExtractionError, SaekinError) and issubclass(UnsupportedMediaType, SaekinError)


def test_time_limit_is_checked_in_process(tmp_path):
    lines = "".join(hwpx_paragraph(f"문단 {i}") for i in range(20_000))
    path = write(tmp_path, "slow.hwpx", build_hwpx([hwpx_section_xml(lines)]))
    with pytest.raises(ExtractionError, match="took longer than"):
        extract_file(path, limits=ExtractLimits(time_limit_s=0.0))
