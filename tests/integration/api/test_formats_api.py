"""Every supported format uploads through the API, reaches `indexed`, and comes back from search
with its page or section; hostile files fail with a clear reason while the service keeps serving."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests import extract_samples as samples
from tests.conftest import FIXTURES, unique_collection, wait_for_status


@pytest.fixture
def database_url(tmp_path) -> str:
    """Formats do not depend on the database: SQLite (embedded) only."""
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'formats.db'}"
    upgrade_database(url)
    return url


def fixture_bytes(name: str) -> bytes:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixture {name} is not present in {FIXTURES}")
    return path.read_bytes()


def upload(client, col, filename, data, **form):
    r = client.post(
        f"/v1/collections/{col}/documents",
        files={"file": (filename, io.BytesIO(data), "application/octet-stream")},
        data=form,
    )
    assert r.status_code == 202, r.text
    return wait_for_status(client, col, r.json()["id"])


def sparse(client, col, query, **extra):
    r = client.post(f"/v1/collections/{col}/search", json={"query": query, "mode": "sparse", **extra})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_real_pdf_search_returns_the_right_pages(app_client):
    col = unique_collection()
    doc = upload(app_client, col, "bill.pdf", fixture_bytes("assembly_bill_2125318_hancompdf.pdf"))
    assert doc["status"] == "indexed", doc
    assert doc["media_type"] == "application/pdf"
    hits = sparse(app_client, col, "발의연월일 발의자 이수진")
    assert hits[0]["page"] == 1
    hits = sparse(app_client, col, "공포 후 6개월이 경과한 날부터 시행")
    assert hits[0]["page"] == 5 and "시행" in hits[0]["text"]
    assert all(h["page"] in range(1, 11) for h in sparse(app_client, col, "탄소중립 위원회", top_k=50))


@pytest.mark.parametrize(
    "name,query,phrase",
    [
        ("gangnam_notice_2023-745.hwpx", "공무직 관리 규정 채용 절차", "서류전형"),
        ("pyhwp_sample-5017.hwp", "예제 파일", "예제 파일입니다"),
        ("chardet_euc-kr_ude_euc2.txt", "북조선 사람들 공화국", "북조선"),
    ],
)
def test_real_korean_documents_are_indexed_and_found(app_client, name, query, phrase):
    col = unique_collection()
    doc = upload(app_client, col, name, fixture_bytes(name))
    assert doc["status"] == "indexed", doc
    hits = sparse(app_client, col, query)
    assert hits and phrase in hits[0]["text"]


def test_misleading_extension_is_read_by_content(app_client):
    col = unique_collection()
    doc = upload(app_client, col, "notice.txt", fixture_bytes("gangnam_notice_2023-745.hwpx"))
    assert doc["status"] == "indexed" and doc["media_type"] == "application/hwp+zip", doc


def test_built_docx_hwpx_hwp_html_markdown(app_client):
    col = unique_collection()
    docx = samples.build_docx(
        samples.docx_paragraph("제1장 총칙", style="1")
        + samples.docx_paragraph("이 규정은 도서관 이용 시간을 정한다.")
        + samples.docx_table([["요일", "시간"], ["토요일", "10시부터 17시"]])
    )
    hwpx = samples.build_hwpx(
        [samples.hwpx_section_xml(samples.hwpx_paragraph("주민센터는 평일 오전 9시에 문을 연다."))]
    )
    hwp = samples.build_hwp([samples.para_records("한글 문서의 본문에는 철도 요금 안내가 있다.")])
    html = "<html><head><title>공지</title><script>var x='스크립트';</script></head><body><nav>메뉴</nav><h1>안내</h1><p>수영장은 월요일에 쉰다.</p></body></html>"
    markdown = "# 소개\n\n박물관 관람료는 무료이다.\n\n## 위치\n\n박물관은 광화문 근처에 있다.\n"
    for filename, data, query, phrase in [
        ("rules.docx", docx, "토요일 도서관", "토요일"),
        ("notice.hwpx", hwpx, "주민센터 평일", "주민센터"),
        ("fare.hwp", hwp, "철도 요금", "철도 요금"),
        ("pool.html", html.encode(), "수영장 월요일", "수영장"),
        ("museum.md", markdown.encode(), "박물관 위치 광화문", "광화문"),
    ]:
        doc = upload(app_client, col, filename, data, external_id=filename)
        assert doc["status"] == "indexed", (filename, doc)
        hits = sparse(app_client, col, query, filter={"external_ids": [filename]})
        assert hits and phrase in hits[0]["text"], (filename, hits)
    assert sparse(app_client, col, "스크립트", filter={"external_ids": ["pool.html"]}) == []
    docx_hit = sparse(app_client, col, "도서관 이용 시간", filter={"external_ids": ["rules.docx"]})[0]
    assert docx_hit["heading"] == "제1장 총칙"
    md_hit = sparse(app_client, col, "광화문", filter={"external_ids": ["museum.md"]})[0]
    assert md_hit["heading"] == "소개 > 위치"


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/hwp+zip")
        zf.writestr("Contents/section0.xml", b"<a>" + b" " * (300 * 2**20) + b"</a>")
    return buf.getvalue()


@pytest.mark.parametrize(
    "filename,make,reason",
    [
        ("scan.pdf", lambda: samples.build_pdf([None, None]), "no text layer"),
        ("locked.pdf", lambda: samples.build_pdf(["secret"], encrypt_user_password="pw"), "encrypted"),
        ("cut.pdf", lambda: fixture_bytes("assembly_bill_2125318_hancompdf.pdf")[:5000], "pdf"),
        ("bomb.hwpx", _zip_bomb, ""),
    ],
)
def test_hostile_files_fail_with_a_reason_and_the_service_keeps_serving(app_client, filename, make, reason):
    col = unique_collection()
    good = upload(app_client, col, "good.txt", "정상 문서는 계속 검색되어야 한다.".encode(), external_id="good")
    doc = upload(app_client, col, filename, make())
    assert doc["status"] == "failed", doc
    assert doc["error"] and reason.lower() in doc["error"].lower(), doc["error"]
    assert good["status"] == "indexed"
    assert sparse(app_client, col, "정상 문서")[0]["external_id"] == "good"


# ---------------------------------------------------------------- issue 18, through the API as a user uploads


def test_distribution_hwp_is_indexed(app_client):
    col = unique_collection()
    body = samples.para_records("배포용 문서의 본문에는 주민등록 발급 수수료 안내가 들어 있다.")
    doc = upload(app_client, col, "dist.hwp", samples.build_distribution_hwp([body]))
    assert doc["status"] == "indexed", doc
    assert "수수료" in sparse(app_client, col, "주민등록 발급 수수료")[0]["text"]


def test_real_distribution_hwp_is_read_not_refused(app_client):
    col = unique_collection()
    doc = upload(app_client, col, "dist.hwp", fixture_bytes("hwp_distribution_doc.hwp"))
    # The fixture's decrypted body has no text at all: the reason says so, not "encrypted".
    assert doc["status"] == "failed" and doc["error"].startswith("no text"), doc


def test_hwpml_is_indexed_as_a_document_and_unknown_xml_is_refused(app_client):
    col = unique_collection()
    doc = upload(app_client, col, "aligns.hml", fixture_bytes("hml_aligns_hwpml291.hml"))
    assert doc["status"] == "indexed" and doc["media_type"] == "application/x-hwpml", doc
    hits = sparse(app_client, col, "center", top_k=20)
    assert hits and all("<" not in h["text"] and "CHAR" not in h["text"] for h in hits)
    r = app_client.post(
        f"/v1/collections/{col}/documents",
        files={"file": ("feed.xml", io.BytesIO(b'<?xml version="1.0"?><rss><channel/></rss>'), "text/xml")},
    )
    assert r.status_code == 415, r.text


def test_headings_and_numbers_of_an_outline_hwpx(app_client):
    col = unique_collection()
    doc = upload(app_client, col, "toc.hwpx", fixture_bytes("hwpx_toc_headings_h2024.hwpx"))
    assert doc["status"] == "indexed", doc
    hits = sparse(app_client, col, "개요 세 번째의 본문입니다", top_k=20)
    third = [h for h in hits if h["text"].count("개요 세 번째의 본문") > 1]
    assert third and {h["heading"] for h in third} == {"3. 개요 세 번째"}
    assert {h["heading"] for h in hits} >= {"1. 개요 첫 번째", "3. 개요 세 번째"}


def test_document_title_used_when_the_client_gives_none(app_client):
    col = unique_collection()
    data = samples.build_docx(samples.docx_paragraph("도서관은 월요일에 쉰다."), title="도서관 이용 안내")
    doc = upload(app_client, col, "library.docx", data)
    assert doc["status"] == "indexed" and doc["title"] == "도서관 이용 안내", doc
    assert sparse(app_client, col, "도서관 월요일")[0]["title"] == "도서관 이용 안내"
    # The same content again without a title changes nothing; a title from the client wins.
    again = app_client.post(
        f"/v1/collections/{col}/documents",
        files={"file": ("library.docx", io.BytesIO(data), "application/octet-stream")},
    )
    assert again.status_code == 200 and again.json()["title"] == "도서관 이용 안내", again.text
    named = upload(app_client, col, "library2.docx", data, title="내 제목", external_id="named")
    assert named["title"] == "내 제목"


def test_a_table_stays_in_one_chunk_with_its_heading(app_client):
    col = unique_collection()
    doc_info = samples.para_shape_record() + samples.para_shape_record(head=1) + samples.numbering_record(["^1."])
    rows = [
        ["구분", "요금", "비고"],
        ["일반", "3,000원", "성인"],
        ["청소년", "1,500원", "만 13세 이상"],
        ["어린이", "무료", "동반 시"],
    ]
    body = (
        samples.para_records("입장료", shape=1)
        + samples.para_records("박물관 입장료는 다음과 같다. 단체는 별도로 문의한다.")
        + samples.table_records(rows)
        + samples.para_records("관람 시간은 오전 9시부터 오후 6시까지이다.")
    )
    doc = upload(app_client, col, "fee.hwp", samples.build_hwp([body], doc_info=doc_info))
    assert doc["status"] == "indexed", doc
    hit = sparse(app_client, col, "청소년 요금")[0]
    assert (
        hit["text"]
        == "구분 | 요금 | 비고\n일반 | 3,000원 | 성인\n청소년 | 1,500원 | 만 13세 이상\n어린이 | 무료 | 동반 시"
    )
    assert hit["heading"] == "1. 입장료"


@pytest.mark.parametrize(
    "filename,make,page,query",
    [
        ("budget.xlsx", "xlsx", 2, "비품 구입"),
        ("deck.pptx", "pptx", 2, "추진 일정"),
    ],
)
def test_xlsx_and_pptx_are_indexed_with_pages_and_headings(app_client, tmp_path, filename, make, page, query):
    path = tmp_path / filename
    if make == "xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        wb = openpyxl.Workbook()
        wb.active.title = "개요"
        wb.active.append(["항목", "내용"])
        sheet = wb.create_sheet("지출")
        sheet.append(["비품 구입", 120000])
        wb.save(path)
        heading = "지출"
    else:
        pptx = pytest.importorskip("pptx")
        prs = pptx.Presentation()
        prs.slides.add_slide(prs.slide_layouts[1]).shapes.title.text = "표지"
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = "일정"
        slide.placeholders[1].text = "추진 일정은 3월부터 시작한다."
        prs.save(path)
        heading = "일정"
    col = unique_collection()
    doc = upload(app_client, col, filename, path.read_bytes())
    assert doc["status"] == "indexed", doc
    hit = sparse(app_client, col, query)[0]
    assert hit["page"] == page and hit["heading"] == heading


def test_image_only_page_fails_with_no_text(app_client):
    col = unique_collection()
    page = b"<html><head><title>x</title></head><body><table><tr><td><img src='a.png'></td></tr></table></body></html>"
    doc = upload(app_client, col, "image.html", page)
    assert doc["status"] == "failed" and doc["error"].startswith("no text"), doc
