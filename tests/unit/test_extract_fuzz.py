"""Property test: random and mutated bytes of every supported format give a document or a domain error.

Mutations work at three levels: raw file bytes (flip, truncate, splice, random), the XML inside DOCX/HWPX
packages (re-zipped so the damage reaches the parser, not just the CRC check), and the record stream of
HWP sections (re-packed into a valid OLE file). Bounded example counts keep the run well under a minute.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.errors import SaekinError
from services.ingest.extract import ExtractedDocument, ExtractLimits, extract_file
from tests.extract_samples import (
    FIXTURES,
    build_distribution_hwp,
    build_docx,
    build_hwp,
    build_hwpx,
    build_pdf,
    docx_document_xml,
    docx_paragraph,
    docx_table,
    hwpx_paragraph,
    hwpx_section_xml,
    hwpx_table,
    para_records,
    table_records,
)

LIMITS = ExtractLimits(time_limit_s=20, max_uncompressed_bytes=32 * 2**20)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DOCX_XML = docx_document_xml(
    docx_paragraph("제1장 총칙", style="1")
    + docx_paragraph("공무직 관리 규정을 개정한다.")
    + docx_table([["구분", "내용"], ["채용", "면접"]])
)
HWPX_XML = hwpx_section_xml(
    hwpx_paragraph("서울특별시 강남구 공고")
    + hwpx_paragraph("<hp:t>표</hp:t>", hwpx_table([["가", "나"], ["다", "라"]]))
    + hwpx_paragraph("<hp:t>탭<hp:tab/>뒤</hp:t>")
)
HWP_SECTION = (
    para_records("한글 문서 첫 문단")
    + table_records([["가", "나"], ["다", "라"]], before="표")
    + para_records("끝 문단")
)


HWPML = (
    '<?xml version="1.0" encoding="UTF-8"?><HWPML Version="2.91"><HEAD><DOCSUMMARY><TITLE>제목</TITLE>'
    '</DOCSUMMARY></HEAD><BODY><SECTION><P ParaShape="0"><TEXT><CHAR>한글 문서</CHAR><TAB/><CHAR>본문</CHAR></TEXT></P>'
    "<P><TEXT><TABLE><ROW><CELL><PARALIST><P><TEXT><CHAR>가</CHAR></TEXT></P></PARALIST></CELL></ROW></TABLE>"
    "</TEXT></P></SECTION></BODY></HWPML>"
)


def _xlsx() -> bytes:
    import io

    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "시트"
    wb.active.append(["구분", "값"])
    wb.active.append(["채용", 3])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _pptx() -> bytes:
    import io

    import pptx

    prs = pptx.Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "제목"
    slide.placeholders[1].text = "본문 한 줄"
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    samples = {
        "seed.txt": "대한민국은 민주공화국이다.\n둘째 줄".encode("cp949"),
        "seed16.txt": "\ufeff대한민국 UTF-16".encode("utf-16-le"),
        "seed.md": "# 제목\n본문\n\n## 둘\n끝".encode(),
        "seed.html": "<html><head><title>제목</title></head><body><h1>머리</h1><p>본문</p><table><tr><td>가</td>"
        "<td>나</td></tr></table><script>x()</script></body></html>".encode(),
        "seed.pdf": build_pdf(["first page", None, "third page"]),
        "seedk.pdf": build_pdf(["대한민국 헌법"], korean=True),
        "seed.docx": build_docx("", document_xml=DOCX_XML.encode()),
        "seed.hwpx": build_hwpx([HWPX_XML]),
        "seed.hwp": build_hwp([HWP_SECTION], title="제목"),
        "seedu.hwp": build_hwp([HWP_SECTION], flags=0),
        "seedd.hwp": build_distribution_hwp([HWP_SECTION]),
        "seed.hml": HWPML.encode(),
        "seed.xlsx": _xlsx(),
        "seed.pptx": _pptx(),
    }
    for name in (
        "assembly_bill_2125318_hancompdf.pdf",
        "gangnam_notice_2023-745.hwpx",
        "pyhwp_sample-5017.hwp",
        "chardet_euc-kr_ude_euc2.txt",
        "hml_aligns_hwpml291.hml",
        "hwp_distribution_doc.hwp",
        "hwpx_toc_headings_h2024.hwpx",
    ):
        path = FIXTURES / name
        if path.is_file() and path.stat().st_size < 2**20:
            samples[name] = path.read_bytes()
    return samples


@functools.lru_cache(maxsize=1)
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="saekin-fuzz-"))


def check(name: str, data: bytes, media_type: str | None = None) -> None:
    path = workdir() / ("sample" + Path(name).suffix)
    path.write_bytes(data)
    try:
        doc = extract_file(path, filename=name, media_type=media_type, limits=LIMITS)
    except SaekinError as exc:
        assert exc.message  # a reason a person can read
        return
    assert isinstance(doc, ExtractedDocument)
    assert doc.sections and all(isinstance(s.text, str) and s.text.strip() for s in doc.sections)
    assert all(s.page is None or s.page >= 1 for s in doc.sections)


@st.composite
def mutated_bytes(draw, seed_names: list[str]) -> tuple[str, bytes]:
    name = draw(st.sampled_from(seed_names))
    data = bytearray(seeds()[name])
    op = draw(st.sampled_from(["flip", "flip", "truncate", "splice", "random"]))
    if op == "flip":
        for _ in range(draw(st.integers(1, 24))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
    elif op == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif op == "splice":
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    else:
        data = bytearray(draw(st.binary(max_size=4096)))
    return name, bytes(data)


@FUZZ
@given(
    mutated_bytes(
        sorted(
            [
                "seed.txt",
                "seed16.txt",
                "seed.md",
                "seed.html",
                "seed.pdf",
                "seedk.pdf",
                "seed.docx",
                "seed.hwpx",
                "seed.hwp",
                "seedu.hwp",
                "seedd.hwp",
                "seed.hml",
                "seed.xlsx",
                "seed.pptx",
            ]
        )
    )
)
def test_mutated_generated_samples(case):
    name, data = case
    check(name, data)


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_mutated_real_fixtures(data):
    real = [n for n in seeds() if not n.startswith("seed")]
    if not real:
        return  # fixtures absent: the generated samples still run above
    name, blob = data.draw(mutated_bytes(real))
    check(name, blob)


@FUZZ
@given(
    st.sampled_from(
        [
            "application/pdf",
            "application/hwp+zip",
            "application/x-hwp",
            "text/html",
            "text/plain",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/x-hwpml",
        ]
    ),
    st.binary(max_size=2048),
)
def test_random_bytes_as_each_declared_type(media_type, blob):
    check("random", blob or b"\x00", media_type=media_type)


def _mutate_text(draw, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        pos = draw(st.integers(0, max(0, len(chars) - 1)))
        token = draw(
            st.sampled_from(
                [
                    "<",
                    ">",
                    "/",
                    "&",
                    "&amp;",
                    '"',
                    "<hp:p>",
                    "</hp:t>",
                    "<w:p>",
                    "</w:tbl>",
                    "<!DOCTYPE x>",
                    "<![CDATA[",
                    "\x00",
                    "\udc80",
                    "가",
                    "<hp:tbl>",
                    "<w:tr>",
                ]
            )
        )
        if op == "delete" and chars:
            del chars[pos : pos + draw(st.integers(1, 40))]
        elif op == "insert":
            chars[pos:pos] = [token]
        elif chars:
            chars[pos] = token
    return "".join(chars)


@FUZZ
@given(st.data())
def test_mutated_xml_inside_packages(data):
    kind = data.draw(st.sampled_from(["docx", "hwpx"]))
    xml = _mutate_text(data.draw, DOCX_XML if kind == "docx" else HWPX_XML)
    raw = xml.encode("utf-8", errors="surrogatepass")
    blob = build_docx("", document_xml=raw) if kind == "docx" else build_hwpx([raw])
    check(f"m.{kind}", blob)


@FUZZ
@given(st.data())
def test_mutated_hwp_records(data):
    section = bytearray(HWP_SECTION)
    for _ in range(data.draw(st.integers(1, 12))):
        pos = data.draw(st.integers(0, len(section) - 1))
        section[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del section[data.draw(st.integers(0, len(section))) :]
    flags = data.draw(st.sampled_from([0, 1]))
    check("m.hwp", build_hwp([bytes(section)], flags=flags))
