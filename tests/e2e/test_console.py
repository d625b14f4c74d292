"""The console (/console) in a real browser: Playwright driving Debian's Chromium, headless,
against `saekin serve` (embedded mode, small twin), uploading the real fixtures through the page.

Screenshots of each main screen go to $SAEKIN_TEST_OUTPUT/console (default: pytest's tmp folder,
printed at the end of the module). Every request the page makes is recorded; none may leave
127.0.0.1 (the page must work offline: no CDN, no web font, no telemetry).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import FIXTURES, REPO

CHROMIUM = Path(os.environ.get("SAEKIN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INSTALL_HINT = "apt-get install -y chromium fonts-noto-cjk (make browser-deps)"

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # the test extra is not installed
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not CHROMIUM.exists():
    reason = (
        "playwright is not installed (pip install -e '.[test]')"
        if sync_playwright is None
        else f"Debian's Chromium is not at {CHROMIUM}: {INSTALL_HINT}"
    )
    if os.environ.get("SAEKIN_REQUIRE_BROWSER"):  # CI: the browser tests must run
        raise RuntimeError(f"SAEKIN_REQUIRE_BROWSER is set but {reason}")
    pytestmark = pytest.mark.skip(reason=reason)

# Fixtures that must index (the others may fail with a reason shown on the page).
MUST_INDEX = {
    "assembly_bill_2125318_hancompdf.pdf",
    "pdf_assembly_minutes_2col_hancompdf.pdf",
    "gangnam_notice_2023-745.hwpx",
    "hwpx_toc_headings_h2024.hwpx",
    "chardet_euc-kr_ude_euc2.txt",
    "pyhwp_sample-5017.hwp",
}
COLLECTION = "fixtures"
KOREAN_QUERY = "탄소중립 녹색성장"
LOCAL_HOSTS = {"127.0.0.1"}


# --- the served instance ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir: Path, twin: Path, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """`saekin serve` on a free port; returns once /readyz says ready."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(SAEKIN_DATA_DIR=str(data_dir), SAEKIN_EMBEDDING_MODEL=str(twin), SAEKIN_PORT=str(port), **extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"saekin serve exited: {proc.communicate()[0]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"saekin serve did not become ready: {proc.communicate()[0]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_twin: Path) -> Iterator[str]:
    proc, base = _serve(tmp_path_factory.mktemp("console-served") / "data", small_twin)
    yield base
    _stop(proc)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Iterator[Path]:
    """Where the screenshots go."""
    root = os.environ.get("SAEKIN_TEST_OUTPUT")
    folder = Path(root) / "console" if root else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nconsole screenshots: {folder}")


# --- the browser: every request recorded, anything beyond 127.0.0.1 refused and reported ------------


class Recorder:
    """Every request a page attempts (`urls`); those that reached the network for another host than
    127.0.0.1 (`outside`, refused here); those the page's Content-Security-Policy stopped in the
    browser before any network (`blocked`); script errors."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.outside: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.headers: list[tuple[str, dict[str, str]]] = []

    def request(self, request) -> None:
        self.urls.append(request.url)
        self.headers.append((request.url, request.headers))

    def failed(self, request) -> None:
        if request.failure and "csp" in request.failure.lower():
            self.blocked.append(request.url)

    def route(self, route) -> None:
        url = route.request.url
        host = urlparse(url).hostname
        if url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _context(browser: Browser) -> tuple[BrowserContext, Recorder]:
    recorder = Recorder()
    context = browser.new_context(viewport={"width": 1400, "height": 900}, reduced_motion="reduce", locale="ko-KR")
    context.on("request", recorder.request)
    context.on("requestfailed", recorder.failed)
    context.route("**/*", recorder.route)
    context.on("page", lambda page: page.on("pageerror", lambda e: recorder.errors.append(str(e))))
    return context, recorder


_RECORDERS: dict[int, Recorder] = {}


def _posts(page: Page, path: str) -> int:
    """How many requests the page sent to `path` so far."""
    return sum(1 for u in _RECORDERS[id(page)].urls if urlparse(u).path == path)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context, recorder = _context(browser)
    page = context.new_page()
    page.on("pageerror", lambda e: recorder.errors.append(str(e)))
    _RECORDERS[id(page)] = recorder
    yield page
    del _RECORDERS[id(page)]
    context.close()
    assert not recorder.outside, f"the page made requests beyond 127.0.0.1: {recorder.outside}"
    assert _hosts(recorder.urls) <= {"127.0.0.1"}, f"the page tried other hosts: {recorder.urls}"
    assert not recorder.errors, f"script errors on the page: {recorder.errors}"


def _open(page: Page, base: str, fragment: str) -> None:
    page.goto(f"{base}/console#/{fragment}")
    expect(page.get_by_test_id("readiness")).to_have_attribute("class", "ready ready-ready")


def _shot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> Path:
    path = folder / f"{name}.png"
    page.wait_for_timeout(150)
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    return path


def _wait_until_final(page: Page, timeout_s: float = 300) -> None:
    page.wait_for_function(
        """() => {
          const rows = [...document.querySelectorAll('[data-testid=upload-files] tbody tr')];
          return rows.length > 0 && rows.every(r => ['indexed', 'failed', 'rejected'].includes(r.dataset.status));
        }""",
        timeout=timeout_s * 1000,
    )


def _drop_paths(page: Page, paths: list[Path]) -> None:
    """Drag files or folders from disk onto the drop zone as a person would: Chromium's own drag and
    drop (DevTools protocol), so the page gets real file-system entries and walks the folders."""
    box = page.get_by_test_id("dropzone").bounding_box()
    assert box
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    cdp.detach()


def _needs_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"real Korean documents are read from {FIXTURES}, which is absent")


# --- upload through the page ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uploaded(served: str, browser: Browser, shots: Path) -> dict:
    """The fixtures folder dropped on the page, uploaded and followed until every file is indexed
    or failed; what the page showed on the way."""
    _needs_fixtures()
    context, recorder = _context(browser)
    page = context.new_page()
    _open(page, served, "upload")
    page.get_by_test_id("upload-collection").fill(COLLECTION)
    page.get_by_test_id("upload-path-as-id").check()
    page.get_by_test_id("upload-metadata").fill('{"source": "shared-fixtures", "year": 2024}')
    _drop_paths(page, [FIXTURES])
    n_files = len([f for f in FIXTURES.iterdir() if f.is_file() and not f.name.startswith(".")])
    expect(page.get_by_test_id("start-upload")).to_have_text(f"업로드 시작 ({n_files}개)")
    page.get_by_test_id("start-upload").click()
    # Live progress: stages other than the final ones show up while the page is never reloaded.
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        statuses = page.eval_on_selector_all(
            "[data-testid=upload-files] tbody tr", "rows => rows.map(r => r.dataset.status)"
        )
        seen.update(statuses)
        if statuses and all(s in ("indexed", "failed", "rejected") for s in statuses):
            break
        page.wait_for_timeout(100)
    _wait_until_final(page, 10)
    rows = page.eval_on_selector_all(
        "[data-testid=upload-files] tbody tr",
        """rows => rows.map(r => ({
            path: r.dataset.file, status: r.dataset.status,
            label: r.querySelector('[data-testid=file-status]').textContent,
            chunks: r.querySelector('[data-testid=file-chunks]').textContent.trim(),
            error: (r.querySelector('[data-testid=file-error]') || {}).textContent || '',
            bar: r.querySelector('.bar .fill').style.width }))""",
    )
    batch = page.get_by_test_id("batch-summary").text_content()
    batch_bar = page.get_by_test_id("batch-bar").evaluate("el => el.style.width")
    shot = _shot(page, shots, "2-upload")
    context.close()
    assert not recorder.outside and not recorder.errors, (recorder.outside, recorder.errors)
    return {"rows": rows, "seen": seen, "batch": batch, "batch_bar": batch_bar, "n_files": n_files, "shot": shot}


def test_fixtures_uploaded_through_the_page_reach_indexed_live(uploaded):
    rows = {Path(r["path"]).name: r for r in uploaded["rows"]}
    assert len(rows) == uploaded["n_files"]
    for name in MUST_INDEX:
        row = rows[name]
        assert row["status"] == "indexed", row
        assert row["label"] == "색인 완료" and int(row["chunks"]) > 0 and row["bar"] == "100%", row
    for row in rows.values():
        assert row["path"].startswith(f"{FIXTURES.name}/")  # folder upload: paths kept as external ids
        if row["status"] == "failed":
            assert row["error"].strip(), f"a failed document shows its reason: {row}"
    # The page showed intermediate states, not only the end.
    assert uploaded["seen"] & {"uploading", "queued", "processing"}, uploaded["seen"]
    indexed = sum(r["status"] == "indexed" for r in rows.values())
    assert uploaded["batch"].startswith(f"전체 {indexed}/{len(rows)} 색인")
    assert uploaded["batch_bar"] == "100%"


def test_pick_a_folder_drop_files_then_retry_and_delete_a_failed_one(served, page, shots, tmp_path):
    _needs_fixtures()
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "메모.txt").write_text("회의는 매주 화요일 오전에 열린다. 안건은 하루 전에 올린다.")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    files = [
        ("chardet_euc-kr_ude_euc2.txt", (FIXTURES / "chardet_euc-kr_ude_euc2.txt").read_bytes(), "text/plain"),
        ("broken.pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\nthis is not a PDF body\n%%EOF", "application/pdf"),
    ]
    _open(page, served, "upload")
    page.get_by_test_id("upload-collection").fill("dropped")
    page.get_by_test_id("upload-metadata").fill('{"kind": "memo"}')
    # The folder picker: files under sub-folders with their paths, hidden files left out.
    page.get_by_test_id("folder-input").set_input_files(str(folder))
    expect(page.locator("[data-testid=upload-files] tbody tr")).to_have_count(1)
    expect(page.locator('tr[data-file="notes/sub/메모.txt"]')).to_have_attribute("data-status", "ready")
    # Files dropped (a DataTransfer built in the page: no file-system entries, the plain file list).
    page.evaluate(
        """files => {
          const dt = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: f.type }));
          }
          const zone = document.querySelector('[data-testid=dropzone]');
          zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
          zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        [{"name": n, "b64": base64.b64encode(b).decode(), "type": t} for n, b, t in files],
    )
    expect(page.get_by_test_id("start-upload")).to_have_text("업로드 시작 (3개)")
    # An external id fits one file only: the page says so instead of sending anything.
    page.get_by_test_id("upload-external-id").fill("one-id")
    page.get_by_test_id("start-upload").click()
    expect(page.get_by_test_id("upload-error")).to_contain_text("외부 ID는 파일이 하나일 때만")
    page.get_by_test_id("upload-external-id").fill("")
    page.get_by_test_id("start-upload").click()
    _wait_until_final(page, 120)

    good = page.locator('tr[data-file="chardet_euc-kr_ude_euc2.txt"]')
    bad = page.locator('tr[data-file="broken.pdf"]')
    expect(good).to_have_attribute("data-status", "indexed")
    expect(page.locator('tr[data-file="notes/sub/메모.txt"]')).to_have_attribute("data-status", "indexed")
    expect(bad).to_have_attribute("data-status", "failed")
    expect(bad.get_by_test_id("file-status")).to_have_text("실패")
    reason = bad.get_by_test_id("file-error").text_content()
    assert reason and reason.strip()
    _shot(page, shots, "2b-upload-failed")

    # Retry sends the file again: a new generation, which fails again with its reason.
    posts_before = _posts(page, "/v1/collections/dropped/documents")
    bad.get_by_test_id("file-retry").click()
    _wait_until_final(page, 120)
    expect(bad).to_have_attribute("data-status", "failed")
    assert _posts(page, "/v1/collections/dropped/documents") == posts_before + 1
    doc_id = bad.locator("a").first.text_content()
    assert httpx.get(f"{served}/v1/collections/dropped/documents/{doc_id}").json()["generation"] == 2

    # Delete asks once more, then removes the document through the API.
    bad.get_by_test_id("file-delete").click()
    expect(bad.get_by_test_id("file-delete")).to_have_text("정말 삭제?")
    bad.get_by_test_id("file-delete").click()
    expect(bad).to_have_count(0)
    assert httpx.get(f"{served}/v1/collections/dropped/documents/{doc_id}").status_code == 404
    meta = httpx.get(f"{served}/v1/collections/dropped/documents", params={"status": "indexed"}).json()["items"]
    assert [d["metadata"] for d in meta] == [{"kind": "memo"}, {"kind": "memo"}]


# --- collections ---------------------------------------------------------------------------------


def test_collections_show_counts_and_edit_search_defaults(served, page, shots, uploaded):
    _open(page, served, "collections")
    row = page.locator(f'tr[data-collection="{COLLECTION}"]')
    expect(row).to_be_visible()
    api = httpx.get(f"{served}/v1/collections/{COLLECTION}").json()
    expect(row.get_by_test_id("count-indexed")).to_have_text(str(api["documents"]["indexed"]))
    expect(row.get_by_test_id("chunk-count")).to_have_text(str(api["chunk_count"]))
    expect(row).to_contain_text("bge-m3-ko")
    expect(row).to_contain_text(api["model_sha256"][:12])
    expect(row.get_by_test_id("defaults-summary")).to_contain_text("서비스 기본값")
    _shot(page, shots, "1-collections")

    row.get_by_test_id("edit-defaults").click()
    page.get_by_test_id("defaults-mode").select_option("hybrid")
    page.get_by_test_id("defaults-fusion").select_option("convex")
    page.get_by_test_id("defaults-alpha").fill("0.2")
    _shot(page, shots, "1b-collection-defaults")
    page.get_by_test_id("defaults-save").click()
    expect(row.get_by_test_id("defaults-summary")).to_have_text("hybrid · convex α=0.2")
    stored = httpx.get(f"{served}/v1/collections/{COLLECTION}").json()["search_defaults"]
    assert stored["mode"] == "hybrid" and stored["fusion"] == {"method": "convex", "alpha": 0.2}

    # The API's 422 reaches the person as it is, and nothing changes.
    row.get_by_test_id("edit-defaults").click()
    page.get_by_test_id("defaults-alpha").fill("1.5")
    page.get_by_test_id("defaults-save").click()
    expect(page.get_by_test_id("defaults-error")).to_contain_text("422")
    assert httpx.get(f"{served}/v1/collections/{COLLECTION}").json()["search_defaults"] == stored

    # Back to the service's defaults.
    page.get_by_test_id("defaults-mode").select_option("")
    page.get_by_test_id("defaults-fusion").select_option("")
    page.get_by_test_id("defaults-save").click()
    expect(row.get_by_test_id("defaults-summary")).to_contain_text("서비스 기본값")


# --- documents -------------------------------------------------------------------------------------


def test_documents_filter_page_and_a_documents_chunks(served, page, shots, uploaded):
    _open(page, served, f"documents/{COLLECTION}")
    table = page.get_by_test_id("documents-table")
    expect(table.locator("tbody tr")).to_have_count(uploaded["n_files"])
    _shot(page, shots, "3-documents")

    page.get_by_test_id("status-filter").select_option("indexed")
    indexed = sum(r["status"] == "indexed" for r in uploaded["rows"])
    expect(table.locator("tbody tr")).to_have_count(indexed)
    assert set(table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"indexed"}

    # Cursor paging, five at a time. The list for the cleared filter (20 a page) is held back in
    # the browser until after the one for five a page has come: the later request must win.
    page.evaluate(
        """() => {
          const fetchNow = window.fetch;
          window.fetch = (url, init) => {
            const held = String(url).includes("/documents?") && String(url).includes("limit=20");
            return held ? new Promise((r) => setTimeout(r, 1500)).then(() => fetchNow(url, init)) : fetchNow(url, init);
          };
        }"""
    )
    page.get_by_test_id("status-filter").select_option("")
    page.get_by_test_id("page-size").select_option("5")
    expect(table.locator("tbody tr")).to_have_count(5)
    page.wait_for_timeout(2000)  # the held-back answer has come by now
    expect(table.locator("tbody tr")).to_have_count(5)
    first_page = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.document)")
    page.get_by_test_id("next-page").click()
    expect(table.locator("tbody tr").first).not_to_have_attribute("data-document", first_page[0])
    second_page = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.document)")
    assert second_page and not set(first_page) & set(second_page)
    page.get_by_test_id("previous-page").click()
    expect(table.locator("tbody tr").first).to_have_attribute("data-document", first_page[0])

    # A document's page: its fields, metadata and chunks with page numbers and token counts.
    page.get_by_test_id("page-size").select_option("50")
    page.locator("tr", has_text="pdf_assembly_minutes_2col_hancompdf.pdf").locator("a").first.click()
    expect(page.get_by_test_id("document-status")).to_have_text("색인 완료")
    expect(page.get_by_test_id("document-fields")).to_contain_text(
        f"{FIXTURES.name}/pdf_assembly_minutes_2col_hancompdf.pdf"
    )
    expect(page.get_by_test_id("document-metadata")).to_contain_text("shared-fixtures")
    chunks = page.get_by_test_id("chunks").locator("li")
    expect(chunks.first).to_contain_text("쪽 1")
    expect(chunks.first).to_contain_text("토큰")
    doc_id = page.url.rsplit("/", 1)[1]
    total = httpx.get(f"{served}/v1/collections/{COLLECTION}/documents/{doc_id}").json()["chunk_count"]
    assert total > 50  # more than one page of chunks
    expect(chunks).to_have_count(50)
    _shot(page, shots, "4-document", full_page=False)
    page.get_by_test_id("more-chunks").click()
    expect(chunks).to_have_count(total)


# --- search ------------------------------------------------------------------------------------------


def test_search_highlights_explain_latency_and_context(served, page, shots, uploaded):
    _open(page, served, f"search/{COLLECTION}")
    page.get_by_test_id("query").fill(KOREAN_QUERY)
    page.get_by_test_id("search-button").click()
    hits = page.get_by_test_id("results").locator("article")
    expect(hits.first).to_be_visible()
    first = hits.first
    # The page shows what the API answers for the same question (title, page, heading).
    api = httpx.post(f"{served}/v1/collections/{COLLECTION}/search", json={"query": KOREAN_QUERY}).json()["results"]
    expect(hits).to_have_count(len(api))
    expect(first.get_by_test_id("hit-title")).to_have_text(api[0]["title"] or api[0]["external_id"])
    assert api[0]["title"].endswith(".pdf") and api[0]["page"] is not None
    expect(first.get_by_test_id("hit-page")).to_have_text(f"쪽 {api[0]['page']}")
    if api[0]["heading"]:
        expect(first.get_by_test_id("hit-heading")).to_have_text(api[0]["heading"])
    # Highlights: exactly the API's spans (code-point offsets) are marked, and they hold the query's terms.
    marked = first.locator(".hl").all_text_contents()
    text, spans = api[0]["text"], api[0]["highlights"]
    assert spans and marked == [text[a:b] for a, b in sorted(spans)], (marked, spans)
    assert "탄소" in "".join(marked) and "녹색성장" in "".join(marked), marked
    assert first.locator(".hit-text").text_content() == text
    expect(page.get_by_test_id("latency")).to_contain_text("서버")
    expect(page.get_by_test_id("settings-used")).to_have_text("hybrid · convex α=0.05")
    _shot(page, shots, "5-search-results", full_page=False)

    # Explain: each hit's rank and score in both legs beside the fused rank.
    page.get_by_test_id("tab-explain").click()
    explain = page.get_by_test_id("explain")
    rows = explain.locator("tbody tr")
    n = rows.count()
    assert n == hits.count() > 1
    fused = rows.get_by_test_id("fused-rank").all_text_contents()
    assert fused == [str(i) for i in range(1, n + 1)]
    sparse = rows.get_by_test_id("sparse-rank").all_text_contents()
    dense = rows.get_by_test_id("dense-rank").all_text_contents()
    assert sparse[0] == "1" and all(s == "—" or s.isdigit() for s in sparse + dense)
    assert any(d.isdigit() for d in dense)  # the dense leg ran too
    _shot(page, shots, "6-search-explain")

    # Sparse only: the dense column is empty.
    page.get_by_test_id("search-mode").select_option("sparse")
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("settings-used")).to_have_text("sparse")
    assert set(explain.locator("tbody tr").get_by_test_id("dense-rank").all_text_contents()) == {"—"}
    page.get_by_test_id("search-mode").select_option("")

    # What the chatbot gets: the context endpoint's passages and citations.
    page.get_by_test_id("tab-context").click()
    context_text = page.get_by_test_id("ctx-text")
    expect(context_text).to_contain_text("[1]")
    expect(context_text).to_contain_text("탄소중립")
    expect(page.get_by_test_id("citations").locator("tbody tr").first).to_contain_text("hancompdf.pdf")
    expect(page.get_by_test_id("ctx-tokens")).to_contain_text("토큰")
    _shot(page, shots, "7-search-context")

    # Metadata filters: a matching value keeps the hits, another one leaves none.
    page.get_by_test_id("tab-results").click()
    page.get_by_test_id("filters-toggle").click()
    page.get_by_test_id("add-filter").click()
    page.get_by_test_id("filter-key").fill("year")
    page.get_by_test_id("filter-value").fill("2024")
    page.get_by_test_id("search-button").click()
    expect(hits.first.get_by_test_id("hit-title")).to_have_text(api[0]["title"])
    page.get_by_test_id("filter-value").fill("1999")
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("results")).to_contain_text("결과가 없습니다")


def test_highlight_offsets_count_code_points_like_the_api(served, page):
    """The API's spans are Python string offsets (code points); a character outside the BMP takes
    two UTF-16 units in JavaScript, so slicing JS strings by those offsets would shift every mark."""
    _open(page, served, "search")
    pieces = page.evaluate(
        """async () => {
          const { segments } = await import('/console/static/util.js');
          return segments('𝐀 서울에서 😀 서울을', [[2, 4], [9, 11]]);
        }"""
    )
    text = "𝐀 서울에서 😀 서울을"
    assert [p["t"] for p in pieces if p["hl"]] == [text[2:4], text[9:11]] == ["서울", "서울"]
    assert "".join(p["t"] for p in pieces) == text


# --- evaluation ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory, small_twin: Path) -> Path:
    """A real `saekin eval --sweep --output-json` result on a tiny BEIR-like set (sparse misses q4)."""
    folder = tmp_path_factory.mktemp("eval")
    docs = {
        "seoul": "서울특별시는 대한민국의 수도이다. 지하철이 1974년에 처음 개통되었다.",
        "busan": "부산광역시는 대한민국 제2의 도시이며 최대의 항구 도시이다. 해운대 해수욕장이 유명하다.",
        "jeju": "제주도는 화산섬이며 한라산이 섬 가운데에 있다.",
        "carbon": "탄소중립 기본법은 2050년까지 온실가스 순배출량을 영으로 줄이는 목표를 정한다.",
    }
    queries = {
        "q1": "대한민국 수도 지하철",
        "q2": "해운대 해수욕장",
        "q3": "화산섬 한라산",
        "q4": "기후 위기에 대응하는 법",
    }
    data = folder / "beir"
    data.mkdir()
    (data / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) for k, v in docs.items())
    )
    (data / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) for k, v in queries.items())
    )
    (data / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tseoul\t1\nq2\tbusan\t1\nq3\tjeju\t1\nq4\tcarbon\t1\n"
    )
    out = folder / "sweep.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env["SAEKIN_EMBEDDING_MODEL"] = str(small_twin)
    args = ["eval", "--dataset", str(data), "--sweep", "--k", "1,3", "--output-json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_evaluation_shows_runs_and_what_came_first_instead(served, page, shots, eval_json):
    result = json.loads(eval_json.read_text())
    _open(page, served, "evaluation")
    page.get_by_test_id("eval-input").set_input_files(str(eval_json))
    runs = page.get_by_test_id("eval-runs").locator("tbody tr")
    expect(runs).to_have_count(len(result["runs"]))
    expect(page.get_by_test_id("eval-summary")).to_contain_text("질문 4/4개 채점")
    header = page.get_by_test_id("eval-runs").locator("thead th").all_text_contents()
    assert header[1:-1] == ["recall@1", "recall@3", "mrr@3", "ndcg@3"]

    sparse = next(r for r in result["runs"] if r["name"] == "sparse")
    page.locator('tr[data-run="sparse"]').click()
    missed = [q for q in sparse["per_query"] if q["first_relevant_rank"] != 1]
    assert missed, "the dataset is built so that sparse search misses a question"
    queries = page.get_by_test_id("eval-queries").locator("tbody tr")
    expect(queries).to_have_count(len(missed))
    for q in missed:
        row = page.locator(f'tr[data-query="{q["query_id"]}"]')
        expect(row).to_contain_text(q["query"])
        rank = q["first_relevant_rank"]
        expect(row.get_by_test_id("first-relevant")).to_have_text(str(rank) if rank else "없음")
        if q["ranked"]:
            expect(row.get_by_test_id("came-first")).to_contain_text(q["ranked"][0]["document"])
    page.get_by_test_id("eval-filter-all").click()
    expect(queries).to_have_count(len(sparse["per_query"]))
    page.get_by_test_id("eval-filter-missed").click()
    _shot(page, shots, "8-evaluation")

    # A file that is not an eval result is refused with a message.
    bad = eval_json.parent / "not-eval.json"
    bad.write_text('{"hello": 1}')
    page.get_by_test_id("eval-input").set_input_files(str(bad))
    expect(page.get_by_test_id("eval-error")).to_contain_text("runs")


# --- language, fonts, offline ----------------------------------------------------------------------


def _korean_font_families() -> set[str]:
    fc_list = shutil.which("fc-list")
    if not fc_list:
        return set()
    out = subprocess.run([fc_list, ":lang=ko", "family"], capture_output=True, text=True).stdout
    return {name.strip() for line in out.splitlines() for name in line.split(",") if name.strip()}


def test_english_toggle_and_korean_glyphs_without_tofu(served, page, shots):
    _open(page, served, "collections")
    nav = page.get_by_test_id("nav-collections")
    expect(nav).to_have_text("컬렉션")
    # The fonts Chromium actually used for Korean text are fonts that have Hangul.
    families = _korean_font_families()
    assert families, f"no font with Korean glyphs is installed: {INSTALL_HINT}"
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    for selector in ('[data-testid="nav-collections"]', "h1", '[data-testid="lang-ko"]'):
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        used = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        assert used and all(f["familyName"] in families for f in used), (selector, used, families)
    # And Hangul syllables render as distinct glyphs (tofu boxes would all look alike).
    distinct = page.evaluate(
        """() => {
          const font = getComputedStyle(document.body).fontFamily;
          const draw = ch => { const c = document.createElement('canvas'); c.width = c.height = 40;
            const g = c.getContext('2d'); g.font = '32px ' + font; g.fillText(ch, 2, 32); return c.toDataURL(); };
          return new Set(['가', '나', '색', '인']).size === new Set(['가', '나', '색', '인'].map(draw)).size;
        }"""
    )
    assert distinct

    page.get_by_test_id("lang-en").click()
    expect(nav).to_have_text("Collections")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    _shot(page, shots, "9-collections-english")
    page.reload()
    expect(page.get_by_test_id("nav-collections")).to_have_text("Collections")  # remembered
    page.get_by_test_id("lang-ko").click()
    expect(page.get_by_test_id("nav-collections")).to_have_text("컬렉션")


def _hosts(urls: list[str]) -> set[str | None]:
    return {urlparse(u).hostname for u in urls if not u.startswith(("data:", "blob:"))}


def test_every_screen_asks_nothing_of_any_other_host(served, browser, uploaded):
    context, recorder = _context(browser)
    page = context.new_page()
    for fragment in ("collections", "upload", f"documents/{COLLECTION}", f"search/{COLLECTION}", "evaluation"):
        _open(page, served, fragment)
        page.wait_for_load_state("networkidle")
    page.get_by_test_id("nav-search").click()
    page.get_by_test_id("query").fill(KOREAN_QUERY)
    page.get_by_test_id("search-button").click()
    page.get_by_test_id("tab-context").click()
    expect(page.get_by_test_id("ctx-text")).to_contain_text("[1]")
    context.close()
    assert len(recorder.urls) > 10
    assert _hosts(recorder.urls) == {"127.0.0.1"}  # not even attempted
    assert not recorder.outside and not recorder.blocked and not recorder.errors


def test_api_docs_are_served_without_a_cdn(served, browser):
    context, recorder = _context(browser)
    page = context.new_page()
    page.goto(f"{served}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Saekin")
    page.wait_for_load_state("networkidle")
    page.goto(f"{served}/redoc")
    expect(page.locator(".redoc-wrap h1").first).to_contain_text("Saekin")
    page.wait_for_load_state("networkidle")
    context.close()
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in recorder.urls)
    assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in recorder.urls)
    # Nothing reached the network for another host. ReDoc's sidebar always asks for Redocly's logo
    # on cdn.redoc.ly; the page's Content-Security-Policy stops it in the browser.
    assert not recorder.outside, recorder.outside
    assert set(recorder.blocked) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, recorder.blocked
    assert _hosts([u for u in recorder.urls if u not in recorder.blocked]) == {"127.0.0.1"}
    assert not recorder.errors, recorder.errors


# --- with API keys -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_with_keys(tmp_path_factory, small_twin: Path) -> Iterator[str]:
    proc, base = _serve(tmp_path_factory.mktemp("console-keys") / "data", small_twin, SAEKIN_API_KEYS="s3cret-key")
    yield base
    _stop(proc)


def test_api_key_prompt_keeps_the_key_in_the_session_only(served_with_keys, browser, shots):
    base = served_with_keys
    context, recorder = _context(browser)
    page = context.new_page()
    page.goto(f"{base}/console#/collections")
    prompt = page.get_by_test_id("key-prompt")
    expect(prompt).to_be_visible()
    _shot(page, shots, "10-api-key-prompt")

    page.get_by_test_id("key-input").fill("wrong-key")
    page.get_by_test_id("key-submit").click()
    expect(page.get_by_test_id("key-error")).to_have_text("키가 맞지 않습니다. 다시 입력하세요.")
    expect(prompt).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('saekin.apiKey')") is None  # a refused key is not kept

    page.get_by_test_id("key-input").fill("s3cret-key")
    page.get_by_test_id("key-submit").click()
    expect(prompt).to_be_hidden()
    expect(page.get_by_test_id("screen-collections")).to_contain_text("아직 컬렉션이 없습니다")
    assert page.evaluate("sessionStorage.getItem('saekin.apiKey')") == "s3cret-key"
    assert page.evaluate("JSON.stringify(localStorage)").find("s3cret-key") == -1

    # Every API call after that carries the key as a Bearer header; the page shell needs none.
    api_calls = [(u, h) for u, h in recorder.headers if "/v1/" in u]
    assert api_calls and api_calls[-1][1].get("authorization") == "Bearer s3cret-key"

    # An upload and a search through the page use it too.
    page.goto(f"{base}/console#/upload")
    page.get_by_test_id("upload-collection").fill("keyed")
    page.get_by_test_id("files-input").set_input_files(
        files=[{"name": "memo.txt", "mimeType": "text/plain", "buffer": "열쇠가 있어야 검색되는 메모이다.".encode()}]
    )
    page.get_by_test_id("start-upload").click()
    _wait_until_final(page, 120)
    expect(page.locator('tr[data-file="memo.txt"]')).to_have_attribute("data-status", "indexed")
    page.goto(f"{base}/console#/search/keyed")
    page.get_by_test_id("query").fill("열쇠 메모")
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("results").locator("article")).to_have_count(1)

    # A reload keeps the session's key; a new session (another context) asks again.
    page.reload()
    expect(page.get_by_test_id("nav-search")).to_be_visible()
    expect(prompt).to_be_hidden()
    other, _ = _context(browser)
    fresh = other.new_page()
    fresh.goto(f"{base}/console#/collections")
    expect(fresh.get_by_test_id("key-prompt")).to_be_visible()
    other.close()

    # Forgetting the key brings the prompt back.
    page.get_by_test_id("forget-key").click()
    expect(prompt).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('saekin.apiKey')") is None
    context.close()
    assert not recorder.outside and not recorder.errors, (recorder.outside, recorder.errors)
