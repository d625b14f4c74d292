"""A backup of the embedded service while it serves (the process that owns its index takes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from services.api.deps import RuntimeDep
from services.api.errors import error_responses
from services.backup import backup_runtime

router = APIRouter(prefix="/v1", tags=["operations"])


class BackupRequest(BaseModel):
    directory: str = Field(
        ...,
        description="An absolute path on the server: a new or empty directory.",
        json_schema_extra={"pattern": "^/"},
    )


class BackupOut(BaseModel):
    directory: str
    manifest: dict[str, Any] = Field(..., description="What saekin-backup.json in the directory says.")


@router.post("/backup", response_model=BackupOut, responses=error_responses(409, 422))
async def backup(body: BackupRequest, rt: RuntimeDep) -> BackupOut:
    """Back up the embedded service (SQLite database and Qdrant Edge shards, consistent with each
    other) into a directory on the server, while it keeps serving: index writes pause for the
    copies, searches do not. `saekin backup DIR --url` calls this."""
    from dataclasses import asdict

    manifest = await run_in_threadpool(backup_runtime, rt, Path(body.directory))
    return BackupOut(directory=body.directory, manifest=asdict(manifest))
