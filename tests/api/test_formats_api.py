"""Every supported format uploads through the API, reaches `indexed`, and comes back from search
with its page or section; hostile files fail with a clear reason while the service keeps serving."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.conftest import FIXTURES, unique_collection, wait_for_status
from tests.unit import extract_samples as samples


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
