"""extract_file_with_timeout: extraction in a child process with a wall-clock limit and a memory cap.

The child is a fresh interpreter (subprocess, not fork): safe inside Celery prefork workers (whose
daemonic processes may not fork multiprocessing children) and next to CUDA/torch in the parent. The
result comes back as JSON, never pickle, so a child subverted by a hostile file cannot run code in
the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from services import errors
from services.errors import ExtractionError, SaekinError

from ._core import decide_korean_words
from ._types import ExtractedDocument, ExtractLimits, Section

_REPO_ROOT = Path(__file__).resolve().parents[3]
_ERROR_CLASSES = {
    cls.__name__: cls
    for cls in (errors.ExtractionError, errors.UnsupportedMediaType, errors.PayloadTooLarge, errors.InvalidInput)
}


def extract_file_with_timeout(
    path: Path,
    *,
    media_type: str | None = None,
    filename: str | None = None,
    limits: ExtractLimits = ExtractLimits(),
    resolve_wraps: bool = True,
) -> ExtractedDocument:
    """Run extract_file in a child process; kill it after limits.time_limit_s; cap its address space
    at limits.max_memory_bytes. Timeouts, memory exhaustion and crashes become ExtractionError.

    PDF line wraps that need Korean word analysis come back marked and are decided here, with this
    process's Kiwi (loaded once), unless resolve_wraps=False.
    """
    request = {
        "path": str(Path(path).resolve()),
        "media_type": media_type,
        "filename": filename,
        "limits": asdict(limits),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        _child_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(_REPO_ROOT),
    )
    try:
        out, err = proc.communicate(json.dumps(request).encode("utf-8"), timeout=limits.time_limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ExtractionError(f"extraction took longer than {limits.time_limit_s:g} s") from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    doc = _decode_reply(proc.returncode, out, err)
    return decide_korean_words(doc) if resolve_wraps else doc


def _child_command() -> list[str]:
    return [sys.executable, "-m", "services.ingest.extract._child"]


def _decode_reply(returncode: int, out: bytes, err: bytes) -> ExtractedDocument:
    try:
        reply = json.loads(out.decode("utf-8")) if out else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        reply = None
    if isinstance(reply, dict) and reply.get("ok") is True:
        try:
            doc = reply["document"]
            return ExtractedDocument(
                media_type=doc["media_type"],
                title=doc.get("title"),
                sections=[
                    Section(text=s["text"], page=s.get("page"), heading=s.get("heading"), table=bool(s.get("table")))
                    for s in doc["sections"]
                ],
            )
        except (KeyError, TypeError) as exc:
            raise ExtractionError("extraction process returned a malformed result") from exc
    if isinstance(reply, dict) and reply.get("ok") is False:
        cls = _ERROR_CLASSES.get(str(reply.get("error")), ExtractionError)
        raise cls(str(reply.get("message") or "extraction failed"))
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            raise ExtractionError(f"extraction crashed ({name}); the document is damaged or exceeds the memory limit")
        raise ExtractionError(f"extraction process was stopped ({name})")
    tail = err.decode("utf-8", errors="replace").strip().splitlines()[-1:] if err else []
    if tail and "MemoryError" in tail[0]:
        raise ExtractionError("the document needs more memory than extraction may use")
    raise ExtractionError("extraction process failed without a result" + (f": {tail[0][:200]}" if tail else ""))


def serialize_error(exc: SaekinError) -> dict:
    return {"ok": False, "error": type(exc).__name__, "message": exc.message, "code": exc.code}
