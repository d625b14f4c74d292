"""Content decides the type; names and declared types only choose between text flavours."""

from __future__ import annotations

import io
import zipfile

import pytest

from services.errors import ExtractionError, UnsupportedMediaType
from services.ingest.extract import (
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
    detect_media_type,
    detect_media_type_data,
    detect_media_type_path,
    extract_file,
)
from tests.extract_samples import (
    build_cfb,
    build_docx,
    build_hwp,
    build_hwpx,
    build_pdf,
    docx_paragraph,
    hwpx_paragraph,
    hwpx_section_xml,
    para_records,
)


def samples() -> dict[str, bytes]:
    return {
        PDF: build_pdf(["page"]),
        DOCX: build_docx(docx_paragraph("문단")),
        HWPX: build_hwpx([hwpx_section_xml(hwpx_paragraph("문단"))]),
        HWP: build_hwp([para_records("문단")]),
    }


def test_supported_media_types():
    assert {TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, PDF, DOCX, HWPX, HWP, HWPML, XLSX, PPTX} == SUPPORTED_MEDIA_TYPES


@pytest.mark.parametrize("kind", [PDF, DOCX, HWPX, HWP])
@pytest.mark.parametrize("misleading", ["report.pdf", "report.docx", "report.hwp", "notes.txt", "a.md", None])
def test_content_wins_over_name(tmp_path, kind, misleading):
    path = tmp_path / "upload"
    path.write_bytes(samples()[kind])
    assert detect_media_type_path(path, filename=misleading, declared="text/plain") == kind
    assert extract_file(path, filename=misleading).media_type == kind


@pytest.mark.parametrize("kind", [PDF, DOCX, HWPX, HWP])
def test_head_only_detection(kind):
    data = samples()[kind]
    assert detect_media_type(data[:8192]) == kind


def test_head_only_detection_of_docx_written_by_python_docx(tmp_path):
    docx = pytest.importorskip("docx")
    path = tmp_path / "d.docx"
    docx.Document().save(path)
    assert detect_media_type(path.read_bytes()[:8192]) == DOCX


def test_text_flavours():
    md = "# 제목\n본문".encode()
    assert detect_media_type(md) == TEXT_PLAIN
    assert detect_media_type(md, filename="a.md") == TEXT_MARKDOWN
    assert detect_media_type(md, declared="text/markdown") == TEXT_MARKDOWN
    assert detect_media_type(md, declared="text/x-markdown; charset=utf-8") == TEXT_MARKDOWN
    assert detect_media_type(b"<!DOCTYPE html><html><p>x</p>") == TEXT_HTML
    assert detect_media_type(b"<!DOCTYPE html><html><p>x</p>", filename="page.txt") == TEXT_HTML
    assert detect_media_type(b"  <div>hello</div>") == TEXT_HTML
    assert detect_media_type(b"<div>hello</div>", filename="a.txt") == TEXT_PLAIN
    assert detect_media_type(b"<!-- note -->\n# title", filename="a.md") == TEXT_MARKDOWN
    assert detect_media_type("한글".encode("cp949")) == TEXT_PLAIN
    assert detect_media_type("한글 문서".encode("utf-16-le")) == TEXT_PLAIN
    assert detect_media_type(b"\xef\xbb\xbf<html><body>x</body></html>") == TEXT_HTML
    # A multibyte character cut at the end of the head is still text.
    assert detect_media_type("가나다".encode()[:-1]) == TEXT_PLAIN


@pytest.mark.parametrize(
    "data,what",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "PNG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "JPEG"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 100, "gzip"),
        (b"HWP Document File V3.00 \x1a\x01\x02\x03\x04\x05", "HWP 3.0"),
        (b"{\\rtf1\\ansi hello}", "RTF"),
        (bytes(range(256)) * 4, "unrecognised binary"),
    ],
)
def test_unsupported_binaries(data, what):
    with pytest.raises(UnsupportedMediaType, match=what):
        detect_media_type(data, filename="x.pdf")


def test_other_zip_and_ole_are_unsupported(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<office:document-content/>")
    odt = tmp_path / "book.docx"
    odt.write_bytes(buf.getvalue())
    with pytest.raises(UnsupportedMediaType, match="OpenDocument"):
        detect_media_type_path(odt)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    xlsx = tmp_path / "book.bin"
    xlsx.write_bytes(buf.getvalue())
    assert detect_media_type_path(xlsx) == XLSX  # read since issue 18
    old = tmp_path / "old.xls"
    old.write_bytes(build_cfb({"Workbook": b"\x00" * 600}))
    with pytest.raises(UnsupportedMediaType, match="legacy Excel"):
        detect_media_type_path(old)
    doc = tmp_path / "old.hwp"
    doc.write_bytes(build_cfb({"WordDocument": b"\x00" * 600, "1Table": b"\x00" * 100}))
    with pytest.raises(UnsupportedMediaType, match="legacy Word"):
        detect_media_type_path(doc)


def test_empty():
    with pytest.raises(ExtractionError, match="empty"):
        detect_media_type(b"")


def test_damaged_container_keeps_its_type_so_the_error_is_about_damage(tmp_path):
    hwpx = build_hwpx([hwpx_section_xml(hwpx_paragraph("문단"))])
    path = tmp_path / "cut"
    path.write_bytes(hwpx[: len(hwpx) // 2])  # no central directory; the mimetype member is still first
    assert detect_media_type_path(path) == HWPX
    with pytest.raises(ExtractionError, match="corrupt or truncated HWPX"):
        extract_file(path)
    docx = build_docx(docx_paragraph("문단"))
    path.write_bytes(docx[:200])
    with pytest.raises(ExtractionError):
        extract_file(path, filename="a.docx")


def test_detection_in_memory_agrees_with_detection_of_the_file(tmp_path):
    """Uploads are detected from their bytes (no temporary file): the same answer, or the same refusal."""
    cases = dict(samples())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<office:document-content/>")
    cases["odt"] = buf.getvalue()
    cases["xls"] = build_cfb({"Workbook": b"\x00" * 600})
    hwpx = samples()[HWPX]
    cases["cut-hwpx"] = hwpx[: len(hwpx) // 2]
    cases["text"] = "서울특별시 공고 제2024-1호".encode("cp949")
    cases["png"] = b"\x89PNG\r\n\x1a\n" + bytes(64)
    for n, (name, data) in enumerate(cases.items()):
        path = tmp_path / f"upload-{n}"
        path.write_bytes(data)
        try:
            expected: str | type[Exception] = detect_media_type_path(path, filename="upload.bin")
        except (UnsupportedMediaType, ExtractionError) as exc:
            expected = type(exc)
        if isinstance(expected, str):
            assert detect_media_type_data(data, filename="upload.bin") == expected, name
        else:
            with pytest.raises(expected):
                detect_media_type_data(data, filename="upload.bin")
