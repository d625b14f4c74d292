"""extract_file_with_timeout: same result as in-process, errors carried over, hangs killed, memory capped."""

from __future__ import annotations

import io
import sys
import time
import zipfile

import pytest

from services.errors import ExtractionError, UnsupportedMediaType
from services.ingest.extract import ExtractLimits, extract_file, extract_file_with_timeout, sandbox
from tests.extract_samples import build_docx, build_hwp, build_pdf, docx_paragraph, para_records


def test_same_result_as_in_process(tmp_path):
    cases = {
        "a.txt": "첫 줄\n둘째 줄 😀\n".encode("cp949", errors="ignore"),
        "b.pdf": build_pdf(["one", None, "three"], title="T"),
        "c.docx": build_docx(docx_paragraph("제목", style="1") + docx_paragraph("본문")),
        "d.hwp": build_hwp([para_records("한글 문단")], title="제목"),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert extract_file_with_timeout(path, filename=name) == extract_file(path, filename=name)


def test_errors_come_back_with_their_class(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ExtractionError, match="empty file"):
        extract_file_with_timeout(empty)
    png = tmp_path / "p"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(UnsupportedMediaType, match="PNG"):
        extract_file_with_timeout(png)
    with pytest.raises(ExtractionError, match="encrypted PDF"):
        enc = tmp_path / "e.pdf"
        enc.write_bytes(build_pdf(["x"], encrypt_user_password="pw"))
        extract_file_with_timeout(enc)


def test_a_hanging_child_is_killed(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_bytes(b"text")
    monkeypatch.setattr(sandbox, "_child_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    with pytest.raises(ExtractionError, match=r"extraction took longer than 0.5 s"):
        extract_file_with_timeout(path, limits=ExtractLimits(time_limit_s=0.5))
    assert time.monotonic() - started < 5


def test_a_real_extraction_over_its_time_limit(tmp_path):
    path = tmp_path / "a.pdf"
    path.write_bytes(build_pdf(["page"] * 50))
    with pytest.raises(ExtractionError, match=r"took longer than 0\.01 s"):
        extract_file_with_timeout(path, limits=ExtractLimits(time_limit_s=0.01))


def test_a_crashing_child_becomes_an_extraction_error(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_bytes(b"text")
    monkeypatch.setattr(
        sandbox,
        "_child_command",
        lambda: [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
    )
    with pytest.raises(ExtractionError, match="crashed"):
        extract_file_with_timeout(path)
    monkeypatch.setattr(sandbox, "_child_command", lambda: [sys.executable, "-c", "print('garbage')"])
    with pytest.raises(ExtractionError, match="without a result"):
        extract_file_with_timeout(path)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_memory_cap_turns_a_bomb_into_an_extraction_error(tmp_path):
    # A 400 MiB member the size/ratio limits are told to allow: only the 256 MiB address-space cap stops it.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w", force_zip64=True) as fh:
            fh.write(b'<w:document xmlns:w="w"><w:body><w:p><w:r><w:t>')
            chunk = b" " * 2**20
            for _ in range(400):
                fh.write(chunk)
            fh.write(b"</w:t></w:r></w:p></w:body></w:document>")
    path = tmp_path / "bomb.docx"
    path.write_bytes(buf.getvalue())
    limits = ExtractLimits(max_uncompressed_bytes=2**40, max_compression_ratio=1e12, max_memory_bytes=256 * 2**20)
    with pytest.raises(ExtractionError, match="needs more memory"):
        extract_file_with_timeout(path, limits=limits)
