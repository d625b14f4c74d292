"""Child-process entry of extract_file_with_timeout: JSON request on stdin, JSON reply on stdout."""

from __future__ import annotations

import json
import os
import resource
import sys


def _cap_memory(max_bytes: int) -> None:
    if max_bytes and max_bytes > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
        except (ValueError, OSError):
            pass  # the platform refuses: run uncapped rather than not at all


def _cap_cpu(seconds: float) -> None:
    try:
        soft = int(seconds) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))
    except (ValueError, OSError):
        pass


def main() -> int:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    limits_args = request["limits"]
    _cap_memory(int(limits_args.get("max_memory_bytes") or 0))
    _cap_cpu(float(limits_args.get("time_limit_s") or 120))
    real_stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the reply
    try:
        from pathlib import Path

        from services.errors import SaekinError
        from services.ingest.extract._core import extract_file
        from services.ingest.extract._types import ExtractLimits
        from services.ingest.extract.sandbox import serialize_error

        try:
            doc = extract_file(
                Path(request["path"]),
                media_type=request.get("media_type"),
                filename=request.get("filename"),
                limits=ExtractLimits(**limits_args),
                resolve_wraps=False,  # decided in the parent, whose Kiwi is loaded once
            )
            reply = {
                "ok": True,
                "document": {
                    "media_type": doc.media_type,
                    "title": doc.title,
                    "sections": [
                        {"text": s.text, "page": s.page, "heading": s.heading, "table": s.table} for s in doc.sections
                    ],
                },
            }
        except SaekinError as exc:
            reply = serialize_error(exc)
        payload = json.dumps(reply).encode("ascii")  # \u escapes: any string survives, even lone surrogates
    except MemoryError:
        payload = (
            b'{"ok": false, "error": "ExtractionError", "message": '
            b'"the document needs more memory than extraction may use"}'
        )
    real_stdout.write(payload)
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
