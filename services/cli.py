"""The `saekin` command: serve, worker, ingest, search, mcp, optimize, reindex, backup, restore, eval, make-twin,
export-encoder, migrate."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from config.profiles import DEFAULT_PROFILE, PROFILES, RERANKER_PROFILES
from config.settings import Settings, get_settings
from services.errors import SaekinError, describe_validation_errors

if TYPE_CHECKING:
    from services.runtime import Runtime

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Saekin (색인): Korean document retrieval service.")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    """The settings, or a one-line error naming the bad SAEKIN_* value (not a traceback)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return get_settings()
    except ValidationError as exc:
        _fail("invalid settings: " + describe_validation_errors(exc.errors()))
    except SettingsError as exc:
        _fail(f"invalid settings: {exc}")


@contextmanager
def _runtime(settings: Settings) -> Iterator[Runtime]:
    """This command's runtime, closed (and the embedded data directory released) however it ends.

    Embedded mode owns the data directory: it is locked and its SQLite database migrated first.
    A SaekinError on the way in becomes a one-line error.
    """
    from services.datadir import DataDirLock
    from services.db import upgrade_database
    from services.runtime import Runtime

    lock = None
    try:
        if settings.mode == "embedded":
            lock = DataDirLock(settings.data_dir).acquire()
            upgrade_database(settings.sqlalchemy_url)
        rt = Runtime(settings)
    except SaekinError as exc:
        if lock is not None:
            lock.release()
        _fail(exc.message)
    try:
        yield rt
    finally:
        rt.close()
        if lock is not None:
            lock.release()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default SAEKIN_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SAEKIN_PORT, 8000).")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes (production mode only).")] = 1,
) -> None:
    """Run the HTTP API. Embedded (no URLs set): SQLite, Qdrant Edge and ingestion in this process."""
    import uvicorn

    from services.observability.logs import configure_logging
    from services.observability.metrics import MULTIPROC_ENV, use_multiprocess_dir

    settings = _settings()
    host, port = host or settings.host, port or settings.port
    _refuse_open_without_keys(settings, host)
    configure_logging(settings.log_format, settings.log_level)
    _check_model(settings)
    # Saekin logs one line per request itself (with its request id), so uvicorn's access log is off;
    # log_config=None keeps the logging configured above.
    quiet = dict(access_log=False, log_config=None)
    if settings.mode == "production":
        if workers > 1 and not os.environ.get(MULTIPROC_ENV):
            # Each uvicorn worker is a process: /metrics sums them through prometheus-client's files.
            import tempfile

            use_multiprocess_dir(tempfile.mkdtemp(prefix="saekin-metrics-"))
        uvicorn.run("services.api.app:create_app", factory=True, host=host, port=port, workers=workers, **quiet)  # type: ignore[arg-type]
        return
    from services.api.app import create_app

    with _runtime(settings) as rt:
        typer.echo(
            f"Saekin embedded mode: data in {settings.data_dir.resolve()}, model {settings.model_name_or_path} "
            f"({settings.embedding_profile}); console http://{host}:{port}/console, API docs http://{host}:{port}/docs"
        )
        uvicorn.run(create_app(settings, runtime=rt), host=host, port=port, **quiet)  # type: ignore[arg-type]


def _refuse_open_without_keys(settings: Settings, host: str) -> None:
    """Listening beyond this machine without API keys lets anyone who reaches the port read and
    delete every document: refused unless SAEKIN_ALLOW_NO_AUTH=true says it is meant."""
    if settings.api_keys or settings.allow_no_auth or is_loopback_host(host) or _live_keys_exist(settings):
        return
    _fail(
        f"refusing to listen on {host} without API keys: anyone who reaches this port could read and delete "
        "every document. Set SAEKIN_API_KEYS=<a long random key>[,<another>] or create one with saekin keys create "
        "(clients send Authorization: "
        "Bearer <key>), listen on 127.0.0.1 only, or set SAEKIN_ALLOW_NO_AUTH=true if another layer guards it"
    )


def _live_keys_exist(settings: Settings) -> bool:
    """Keys made by `saekin keys create` (or /v1/keys) are live in the database."""
    from sqlalchemy.exc import SQLAlchemyError

    from services.auth.keys import any_live_key
    from services.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return any_live_key(session)
    except SQLAlchemyError:  # not migrated yet: no keys
        return False
    finally:
        engine.dispose()


def is_loopback_host(host: str) -> bool:
    """`host` (an address or name to bind) is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_model(settings: Settings) -> None:
    """Fail at start, in seconds, when the configured embedding model cannot be read, rather than
    serving a process whose every upload and dense search would fail."""
    from services.embedding.loading import check_embedding_model

    try:
        check_embedding_model(settings)
    except SaekinError as exc:
        _fail(exc.message)


@app.command()
def migrate() -> None:
    """Apply database migrations (production: run before starting the API)."""
    from services.db import upgrade_database

    upgrade_database(_settings().sqlalchemy_url)
    typer.echo("database is at the latest revision")


def _serve_worker_metrics(port: int) -> None:
    """The worker's pool processes record into PROMETHEUS_MULTIPROC_DIR (a fresh directory unless
    set); this main process serves their sum on `port`."""
    import tempfile

    from services.observability.metrics import MULTIPROC_ENV, serve_worker_metrics, use_multiprocess_dir

    use_multiprocess_dir(os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="saekin-worker-metrics-"))
    serve_worker_metrics(port)
    typer.echo(f"worker metrics on http://0.0.0.0:{port}/metrics")


@app.command()
def worker(
    queue: Annotated[str, typer.Option(help="ingest (CPU stages) or embed (the model; GPU).")] = "ingest",
    concurrency: Annotated[int | None, typer.Option(help="Ingest worker processes (default: CPU cores).")] = None,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker for one queue (production mode)."""
    from services.dispatch import EMBED_QUEUE, INGEST_QUEUE
    from workers.celery_app import create_celery

    if queue not in (INGEST_QUEUE, EMBED_QUEUE):
        _fail(f"--queue must be {INGEST_QUEUE} or {EMBED_QUEUE}")
    try:
        celery = create_celery(_settings())
    except RuntimeError as exc:
        _fail(str(exc))
    from celery.signals import setup_logging

    from services.observability.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, loglevel.upper())
    setup_logging.connect(lambda **_: None, weak=False)  # Celery keeps the logging configured above
    if settings.worker_metrics_port:
        _serve_worker_metrics(settings.worker_metrics_port)
    # Workers share nothing with each other through the broker (leases live in the database): no
    # mingle at start (a wait for other workers' replies) and no gossip traffic.
    argv = [
        "worker",
        f"--queues={queue}",
        f"--loglevel={loglevel}",
        f"--hostname={queue}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    celery.conf.saekin_queue = queue  # what each pool process checks it can import (workers/tasks.py)
    from celery.signals import worker_ready

    from workers.tasks import start_reaper, warm_embed_worker

    # Every worker runs the reaper (expired leases, lost messages) in its main process.
    worker_ready.connect(lambda **_: start_reaper(celery), weak=False)
    if queue == EMBED_QUEUE:
        # One process per GPU, model loaded once in it; CUDA cannot be used across fork.
        argv += ["--pool=solo"]
        worker_ready.connect(lambda **_: warm_embed_worker(), weak=False)
    else:
        # One pool process per core does the parallel work; the tokenizer's own thread pool in
        # each of them would only add CPU time (the chunker's calls cost a third more with it).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if concurrency:
            argv += [f"--concurrency={concurrency}"]
    celery.worker_main(argv)


def _iter_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Hidden files and everything in hidden folders (.git, .venv) are not documents.
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            _fail(f"{path} does not exist")
    return files


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index.")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "default",
    wait: Annotated[bool, typer.Option(help="Production mode: wait until all documents are indexed.")] = True,
) -> None:
    """Upload files and folders into a collection, with a progress bar."""
    from tqdm import tqdm

    from services.dispatch import CeleryDispatcher, Dispatcher, InlineDispatcher, intake
    from services.documents import service
    from services.documents.lifecycle import Upload, WorkItem
    from services.ingest.extract import detect_media_type_data

    settings = _settings()
    try:
        service.validate_collection_name(collection)
    except SaekinError as exc:
        _fail(exc.message)
    files = _iter_files(paths)
    if not files:
        _fail("no files to ingest")
    with _runtime(settings) as rt:
        dispatcher: Dispatcher
        if settings.broker_url:
            dispatcher = CeleryDispatcher(settings.broker_url)
        else:
            dispatcher = inline = InlineDispatcher(rt.process_now)
        submitted: list[WorkItem] = []
        counts = {"new": 0, "unchanged": 0, "rejected": 0}
        with tqdm(total=len(files), unit="file", desc="upload") as bar:
            for path in files:
                try:
                    data = path.read_bytes()
                    upload = Upload(
                        data=data,
                        filename=path.name,
                        media_type=detect_media_type_data(data, filename=path.name),  # unknown types: refused now
                        external_id=str(path.resolve()),  # the same file whatever the path was typed as
                    )
                    stored = intake(
                        upload,
                        session_factory=rt.session_factory,
                        collection_name=collection,
                        profile=rt.profile,
                        dispatcher=dispatcher,
                        model=rt.model_ref,
                        any_model=rt.settings.max_models > 1,
                    )
                    counts["new" if stored.created else "unchanged"] += 1
                    if stored.created:
                        submitted.append(stored.item)
                except SaekinError as exc:
                    counts["rejected"] += 1
                    tqdm.write(f"rejected: {path}: {exc.message}", file=sys.stderr)
                bar.update()
        dispatcher.close() if settings.broker_url else None
        if not settings.broker_url:
            with tqdm(total=len(submitted), unit="doc", desc="index") as bar:
                inline.drain(batch=16, progress=bar.update)
        elif wait and submitted:
            _wait_until_done(rt, [item.document_id for item in submitted])
        failed = _failed_documents(rt, [item.document_id for item in submitted])
    for filename, error in failed:
        typer.secho(f"failed: {filename}: {error}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{counts['new']} new, {counts['unchanged']} unchanged, {counts['rejected']} rejected, {len(failed)} failed"
    )
    if counts["rejected"] or failed:
        raise typer.Exit(1)  # like cp: some files were not indexed


def _wait_until_done(rt: Runtime, ids: list) -> None:
    """A progress bar until every document is indexed, failed or deleted (production mode)."""
    from sqlalchemy import func, select
    from tqdm import tqdm

    from services.db import session_scope
    from services.documents.models import Document, DocumentStatus

    with tqdm(total=len(ids), unit="doc", desc="index") as bar:
        while bar.n < len(ids):
            time.sleep(1)
            with session_scope(rt.session_factory) as session:
                # Finished, or deleted meanwhile (no row left to finish).
                waiting = session.scalar(
                    select(func.count())
                    .select_from(Document)
                    .where(
                        Document.id.in_(ids), Document.status.not_in([DocumentStatus.indexed, DocumentStatus.failed])
                    )
                )
            bar.update(len(ids) - (waiting or 0) - bar.n)


def _failed_documents(rt: Runtime, ids: list) -> list[tuple[str | None, str | None]]:
    from sqlalchemy import select

    from services.db import session_scope
    from services.documents.models import Document, DocumentStatus

    with session_scope(rt.session_factory) as session:
        rows = session.execute(
            select(Document.filename, Document.error).where(
                Document.id.in_(ids), Document.status == DocumentStatus.failed
            )
        ).all()
    return [(filename, error) for filename, error in rows]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help='The question, e.g. "탄소중립 기본법 개정 이유".')],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    mode: Annotated[
        str | None, typer.Option(help="dense, sparse or hybrid (default: the collection's, else hybrid).")
    ] = None,
    fusion: Annotated[
        str | None,
        typer.Option(help='Hybrid fusion: rrf, dbsf, convex or JSON, e.g. \'{"method": "convex", "alpha": 0.2}\'.'),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="Rerank with the cross-encoder (default: the collection's)."),
    ] = None,
    explain: Annotated[bool, typer.Option(help="Each hit's rank and score in each leg (with --json).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
) -> None:
    """Search a collection from the command line."""
    import json

    from pydantic import ValidationError

    from services.db import session_scope
    from services.search.schemas import SearchRequest
    from services.search.service import search as run_search

    try:
        parsed_fusion = json.loads(fusion) if fusion and fusion.lstrip().startswith("{") else fusion
        request = SearchRequest.model_validate(
            {
                "query": query,
                "top_k": top_k,
                "mode": mode,
                "fusion": parsed_fusion,
                "rerank": rerank,
                "explain": explain,
            }
        )
    except json.JSONDecodeError as exc:
        _fail(f"--fusion is not valid JSON: {exc.msg}")
    except ValidationError as exc:
        _fail(describe_validation_errors(exc.errors()))
    settings = _settings()
    with _runtime(settings) as rt:
        try:
            with session_scope(rt.session_factory) as session:
                response = run_search(
                    session,
                    index=rt.index,
                    analyzer=rt.analyzer,
                    query_encoder=rt.query_encoder if request.mode != "sparse" else None,  # no model for sparse
                    profile=rt.profile,
                    collection_name=collection,
                    request=request,
                    reranker=rt.reranker if request.rerank is not False else None,
                )
        except SaekinError as exc:
            _fail(exc.message)
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    for hit in response.results:
        where = f" p.{hit.page}" if hit.page else ""
        typer.secho(
            f"{hit.rank}. [{hit.score:.4f}] {hit.title or hit.external_id or hit.document_id}{where}", bold=True
        )
        typer.echo("   " + hit.text[:300].replace("\n", " "))
    note = f"; {response.note}" if response.note else ""
    typer.echo(f"({len(response.results)} results, {response.took_ms} ms{note})")


@app.command()
def mcp(
    url: Annotated[
        str | None,
        typer.Option(
            help="A running Saekin service to call (e.g. http://127.0.0.1:8000); default: this data directory."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SAEKIN_API_KEY", help="API key of the service at --url.")
    ] = None,
) -> None:
    """Serve the MCP tools (search, get_context, list_collections, get_document) over stdio.

    With --url the tools call that service over HTTP; without it they run in this process on the
    embedded data directory (which must then not be in use by `saekin serve`).
    """
    from services.mcp_server import build_mcp_server

    # stdout carries the protocol: logs go to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if url:
        from services.client import SaekinClient

        with SaekinClient(url, api_key=api_key) as client:
            build_mcp_server(client).run("stdio")
        return
    from services.mcp_server import RuntimeBackend

    with _runtime(_settings()) as rt:
        build_mcp_server(RuntimeBackend(rt)).run("stdio")


@app.command()
def optimize() -> None:
    """Embedded mode: merge segments, drop deleted points and build HNSW graphs (service stopped).

    Qdrant Edge never optimizes by itself and freezes its process while it does, so this is a
    maintenance command; run it after large ingests. A Qdrant server optimizes on its own.
    """
    from sqlalchemy import select
    from tqdm import tqdm

    from services.db import session_scope
    from services.documents.models import Collection, index_name

    settings = _settings()
    if settings.mode != "embedded":
        _fail("optimize is for embedded mode (Qdrant Edge); a Qdrant server optimizes its collections itself")
    with _runtime(settings) as rt:
        optimize_index = getattr(rt.index, "optimize", None)
        if optimize_index is None:
            _fail("this data directory's index is not Qdrant Edge (SAEKIN_QDRANT_PATH is for tests)")
        with session_scope(rt.session_factory) as session:
            names = sorted({index_name(c) for c in session.scalars(select(Collection))})
        names = [n for n in names if rt.index.collection_exists(n)]
        for name in tqdm(names, desc="optimize", unit="collection", file=sys.stderr):
            started = time.perf_counter()
            changed = optimize_index(name)
            typer.echo(
                f"{name}: {rt.index.count(name)} points, "
                f"{'optimized' if changed else 'already optimal'} in {time.perf_counter() - started:.1f}s"
            )


@app.command()
def reindex(
    collection: Annotated[str, typer.Option("--collection", "-c", help="The collection to reindex.")],
    profile: Annotated[
        str | None, typer.Option(help=f"Embedding profile of the new model ({', '.join(PROFILES)}).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="The new model: a hub id or a local directory (default: the profile's).")
    ] = None,
    sparse_only: Annotated[
        bool, typer.Option("--sparse-only", help="Keep the dense vectors; recompute the sparse ones (analyzer change).")
    ] = False,
    rechunk: Annotated[
        bool | None,
        typer.Option(
            "--rechunk/--no-rechunk",
            help="Chunk the documents again with the new model's budget (default: when its budget is smaller "
            "than the longest chunk).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Ask this running service to reindex (embedded: the process owning the index).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SAEKIN_API_KEY", help="API key of the service at --url.")
    ] = None,
) -> None:
    """Build a collection's index again (a new model, a new analyzer, or as it is) beside the live
    one, then switch searches to it and drop the old one.

    Searches read the old index until the switch; documents uploaded meanwhile are copied too.
    Default model: this service's (SAEKIN_EMBEDDING_PROFILE / SAEKIN_EMBEDDING_MODEL). Embedded
    mode: run it while `saekin serve` is stopped, or ask the running service (POST
    /v1/collections/{name}/reindex); production: run it anywhere with the service's settings.
    """
    from tqdm import tqdm

    from services.collections.reindex import run_for_runtime

    if url:
        _reindex_remote(
            url, api_key, collection, dict(profile=profile, model=model, sparse_only=sparse_only, rechunk=rechunk)
        )
        return
    settings = _settings()
    with _runtime(settings) as rt, tqdm(unit="doc", desc=f"reindex {collection}", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = run_for_runtime(
                rt,
                name=collection,
                profile=profile,
                model=model,
                sparse_only=sparse_only,
                rechunk=rechunk,
                progress=progress,
            )
        except SaekinError as exc:
            bar.close()
            _fail(exc.message)
    sparse = (
        "chunked again"
        if result.rechunked
        else ("sparse vectors recomputed" if result.recomputed_sparse else "sparse vectors kept")
    )
    typer.echo(
        f"{collection}: {result.documents} documents, {result.chunks} chunks into {result.physical_index} "
        f"({result.replayed} copied again after changes; {sparse}) in {result.seconds:.1f}s; "
        f"searches now read {result.index_name}"
    )


def _reindex_remote(url: str, api_key: str | None, collection: str, body: dict) -> None:
    """POST the reindex to a running service, then follow GET's progress with a bar."""
    import httpx
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:
        started = client.post(f"/v1/collections/{collection}/reindex", json=body)
        if started.status_code != 202:
            _fail(started.json().get("error", {}).get("message", started.text))
        state = started.json()["reindex"]
        with tqdm(total=state["documents_total"], unit="doc", desc=f"reindex {collection}", file=sys.stderr) as bar:
            while state["status"] in ("building", "switching"):
                time.sleep(1)
                state = client.get(f"/v1/collections/{collection}").json()["reindex"]
                bar.total = state["documents_total"]
                bar.update(state["documents_done"] - bar.n)
    if state["status"] != "done":
        _fail(f"the reindex failed: {state.get('error')}")
    typer.echo(
        f"{collection}: {state['documents_done']} documents, {state['chunks_done']} chunks into "
        f"{state['target_index']} ({state['documents_replayed']} copied again after changes"
        f"{'; chunked again' if state.get('rechunk') else ''})"
    )


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="A new (or empty) directory for the backup.")],
    url: Annotated[
        str | None, typer.Option(help="Ask this running embedded service to take it (DIRECTORY on its machine).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SAEKIN_API_KEY", help="API key of the service at --url.")
    ] = None,
) -> None:
    """Embedded mode: back up the SQLite database and the Qdrant Edge index into DIRECTORY.

    The two are taken consistent with each other (index writes pause for the database copy and
    the shard copies; searches go on). Production: pg_dump and Qdrant snapshots (README).
    """
    from services.backup import BackupManifest, backup_runtime

    directory = directory.resolve()
    if url:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        answer = httpx.post(
            f"{url.rstrip('/')}/v1/backup", json={"directory": str(directory)}, headers=headers, timeout=3600
        )
        if answer.status_code != 200:
            _fail(answer.json().get("error", {}).get("message", answer.text))
        manifest = BackupManifest(**answer.json()["manifest"])
    else:
        settings = _settings()
        if settings.mode != "embedded" or settings.database_url or settings.qdrant_url or settings.qdrant_path:
            _fail("backup is for the embedded default (SQLite + Qdrant Edge); see README 'Backups' for production")
        with _runtime(settings) as rt:
            try:
                manifest = backup_runtime(rt, directory)
            except SaekinError as exc:
                _fail(exc.message)
    for name, info in sorted(manifest.collections.items()):
        typer.echo(f"{name}: {info['documents']} documents, {info['chunks']} chunks, {info['points']} points")
    typer.echo(
        f"backup in {directory}: {len(manifest.shards)} index shards in {manifest.seconds:.1f}s "
        f"(index writes paused {manifest.paused_writes_s:.2f}s)"
        + (
            f"; {manifest.reembed_documents} documents are embedded again on restore"
            if manifest.reembed_documents
            else ""
        )
    )


@app.command()
def restore(
    directory: Annotated[Path, typer.Argument(help="A directory written by `saekin backup`.")],
    force: Annotated[
        bool, typer.Option(help="Restore over existing data (moved aside into the data directory, not deleted).")
    ] = False,
) -> None:
    """Embedded mode: restore a backup into SAEKIN_DATA_DIR (the service must be stopped)."""
    from services.backup import restore_embedded

    settings = _settings()
    if settings.mode != "embedded" or settings.database_url or settings.qdrant_url or settings.qdrant_path:
        _fail("restore is for the embedded default (SQLite + Qdrant Edge); see README 'Backups' for production")
    try:
        restored = restore_embedded(directory, settings.data_dir, force=force)
    except SaekinError as exc:
        _fail(exc.message)
    if restored.moved_aside:
        typer.echo(f"the data that was in {settings.data_dir} is now in {restored.moved_aside}")
    waiting = int(restored.manifest.get("reembed_documents", 0))
    if waiting:
        # Documents whose points the backup lacked: embedded again now (or by the service at start).
        with _runtime(settings) as rt:
            owner = f"restore-{os.getpid()}"
            while rt.embed_waiting(owner=owner):
                pass
    typer.echo(
        f"restored {directory} into {settings.data_dir}: {len(restored.manifest.get('collections', {}))} collections"
        + (f", {waiting} documents embedded again" if waiting else "")
    )


keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
app.add_typer(keys_app, name="keys")


def _keys_session():
    """A session on the configured database (migrated first in embedded mode). Keys are rows of
    the database, so this works while `saekin serve` runs; the service sees a change within 2 s."""
    from services.db import make_engine, make_session_factory, session_scope, upgrade_database

    settings = _settings()
    if settings.mode == "embedded":
        upgrade_database(settings.sqlalchemy_url)
    return session_scope(make_session_factory(make_engine(settings.sqlalchemy_url)))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")],
    scope: Annotated[
        str,
        typer.Option(
            help="read (search, context, get, list), write (also upload, delete), admin (also keys, settings)."
        ),
    ] = "read",
    collections: Annotated[
        str, typer.Option(help="Comma-separated collection names or glob patterns (hr-*); '*' for all.")
    ] = "*",
    rps: Annotated[float | None, typer.Option(help="Requests per second (default: SAEKIN_KEY_RATE_LIMIT_RPS).")] = None,
    upload_mb_per_day: Annotated[
        float | None, typer.Option(help="Upload MB per UTC day (default: SAEKIN_KEY_UPLOAD_MB_PER_DAY).")
    ] = None,
) -> None:
    """Create an API key and print it: it is stored only as a hash and cannot be shown again."""
    from services.auth.keys import create_key
    from services.auth.models import Scope

    try:
        chosen = Scope(scope)
    except ValueError:
        _fail(f"--scope must be read, write or admin (got {scope!r})")
    if (rps is not None and rps <= 0) or (upload_mb_per_day is not None and upload_mb_per_day <= 0):
        _fail("--rps and --upload-mb-per-day must be positive")
    try:
        with _keys_session() as session:
            created = create_key(
                session,
                name=name,
                scope=chosen,
                collections=collections.split(","),
                rate_limit_rps=rps,
                upload_bytes_per_day=int(upload_mb_per_day * 1024 * 1024) if upload_mb_per_day else None,
            )
            key_id = created.key.id
    except SaekinError as exc:
        _fail(exc.message)
    typer.echo(created.plain)
    typer.echo(
        f"key {key_id} ({chosen.value}, collections {', '.join(created.key.collections)}): store it now, "
        "it is not shown again",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Also revoked keys.")] = False,
) -> None:
    """The keys: id, prefix, name, scope, collections, limits, created (never the keys themselves)."""
    from services.auth.keys import list_keys

    with _keys_session() as session:
        rows = list_keys(session, include_revoked=all_keys)
        for k in rows:
            limits = []
            if k.rate_limit_rps:
                limits.append(f"{k.rate_limit_rps:g} rps")
            if k.upload_bytes_per_day:
                limits.append(f"{k.upload_bytes_per_day / 1024 / 1024:g} MB/day")
            typer.echo(
                "\t".join(
                    [
                        str(k.id),
                        k.prefix + "…",
                        k.name,
                        k.scope.value,
                        ",".join(k.collections),
                        " ".join(limits) or "-",
                        k.created_at.strftime("%Y-%m-%d %H:%M"),
                        "revoked " + k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "live",
                    ]
                )
            )
    if not rows:
        typer.echo("no keys (SAEKIN_API_KEYS, if set, are admin keys)", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (or its start), or its prefix sk_….")],
) -> None:
    """Revoke a key: every API process refuses it within 2 seconds."""
    from services.auth.keys import revoke_key

    try:
        with _keys_session() as session:
            key = revoke_key(session, key_id)
            revoked = key.id
    except SaekinError as exc:
        _fail(exc.message)
    typer.echo(f"revoked {revoked}")


@app.command("eval")
def eval_command(
    dataset: Annotated[Path, typer.Option(help="AutoRAG folder (qa*.parquet + *corpus*.parquet) or BEIR-like folder.")],
    mode: Annotated[str, typer.Option(help="dense, sparse or hybrid.")] = "hybrid",
    fusion: Annotated[
        list[str] | None,
        typer.Option(help='Hybrid fusion, a name or JSON such as \'{"method": "convex", "alpha": 0.2}\'; repeatable.'),
    ] = None,
    rerank: Annotated[bool, typer.Option(help="Rerank the fused candidates (needs SAEKIN_RERANK_PROFILE).")] = False,
    sweep: Annotated[
        bool, typer.Option(help="One ingestion, then every leg and the usual fusions (and reranking, if configured).")
    ] = False,
    k: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "1,3,5,10",
    output_json: Annotated[Path | None, typer.Option(help="Write the result JSON here.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Embedded mode: where to build the throwaway index (default: a temporary folder)."),
    ] = None,
) -> None:
    """Ingest a benchmark corpus through the real pipeline and report recall, precision, F1, MRR, MAP, NDCG.

    With --sweep (or several --fusion), one ingestion serves every configuration: the table and the
    JSON show which to make a collection's default (PATCH /v1/collections/{c} with the run's settings).
    """
    import contextlib
    import json
    import tempfile

    from services.evaluation import runner
    from services.evaluation.datasets import load_dataset

    ks = _parse_ks(k)
    configs = _eval_configs(mode, fusion or [], rerank=rerank, sweep=sweep, reranker_configured=None)
    if output_json is not None:  # checked before the run, which can take an hour
        try:
            output_json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"cannot write {output_json}: {exc.strerror}")
    try:
        ds = load_dataset(dataset)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    settings = _settings()
    if sweep:
        configs = _eval_configs(
            mode, [], rerank=rerank, sweep=True, reranker_configured=settings.reranker_profile is not None
        )
    elif any(c.rerank is not None for c in configs) and settings.reranker_profile is None:
        _fail("--rerank needs a reranker: set SAEKIN_RERANK_PROFILE or SAEKIN_RERANK_MODEL")
    with contextlib.ExitStack() as stack:
        if settings.mode == "embedded":  # a throw-away data directory unless one is given
            where = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saekin-eval-")))
            settings = settings.model_copy(update={"data_dir": where})
        rt = stack.enter_context(_runtime(settings))
        started = time.perf_counter()
        needs_model = any(c.mode != "sparse" for c in configs)
        query_encoder = rt.query_encoder if needs_model else None  # loaded before the clock starts on ingestion
        reranker = rt.reranker if any(c.rerank is not None for c in configs) else None
        rt.analyzer, rt.encoder  # noqa: B018 - Kiwi and the model, loaded once and timed apart
        load_s = time.perf_counter() - started
        corpus = runner.ingest_corpus(
            ds, session_factory=rt.session_factory, process=rt.process_now, profile=rt.profile
        )
        try:
            runs = [
                runner.run_queries(
                    ds,
                    corpus,
                    config,
                    session_factory=rt.session_factory,
                    index=rt.index,
                    analyzer=rt.analyzer,
                    query_encoder=query_encoder,
                    profile=rt.profile,
                    ks=ks,
                    reranker=reranker,
                )
                for config in configs
            ]
        finally:
            runner.drop_corpus(corpus, session_factory=rt.session_factory, index=rt.index)
    result: dict = {
        "dataset": ds.name,
        "model": settings.model_name_or_path,
        "profile": settings.embedding_profile,
        "reranker": settings.reranker_name_or_path if reranker is not None else None,
        "n_queries": len(ds.queries),
        "n_judged_queries": runs[0]["n_judged_queries"],
        "n_documents": corpus.n_documents,
        "n_chunks": corpus.n_chunks,
        "failed_documents": corpus.failed_documents,
        "timings": {"load_s": round(load_s, 2), "ingest_s": round(corpus.ingest_s, 2)},
        "warnings": runner.dataset_warnings(ds),
        "runs": runs,
    }
    if len(runs) == 1:  # one configuration: its figures at the top, as before sweeps existed
        result.update(mode=runs[0]["settings"]["mode"], metrics=runs[0]["metrics"])
    else:
        result["best"] = {m: runner.best_run(result, m)["name"] for m in (f"recall@{ks[0]}", f"mrr@{ks[-1]}")}
    typer.echo(runner.format_table(result, ks))
    if output_json:
        output_json.write_text(json.dumps(result, ensure_ascii=False, indent=2))
        typer.echo(f"wrote {output_json}")


def _parse_ks(k: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        _fail("--k must be comma-separated integers, e.g. 1,3,5,10")
    if not ks or ks[0] < 1 or ks[-1] > 100:
        _fail("--k values must lie between 1 and 100")
    return ks


def _eval_configs(
    mode: str, fusions: list[str], *, rerank: bool, sweep: bool, reranker_configured: bool | None
) -> list:
    """The search configurations an eval runs; a one-line error for a bad mode or fusion."""
    import json

    from pydantic import TypeAdapter, ValidationError

    from services.evaluation.runner import SearchConfig, sweep_configs
    from services.search.schemas import DEFAULT_FUSION, Fusion, RerankOptions

    if mode not in ("dense", "sparse", "hybrid"):
        _fail("--mode must be dense, sparse or hybrid")
    if sweep:
        return sweep_configs(rerank=bool(reranker_configured))
    parsed: list = []
    for text in fusions:
        try:
            value = json.loads(text) if text.lstrip().startswith("{") else text
            parsed.append(TypeAdapter(Fusion).validate_python(value))
        except (json.JSONDecodeError, ValidationError) as exc:
            _fail(f"--fusion {text}: {exc}")
    if parsed and mode != "hybrid":
        _fail("--fusion needs --mode hybrid")
    options = RerankOptions() if rerank else None
    if parsed:
        return [SearchConfig("hybrid", f, options) for f in parsed]
    return [SearchConfig(mode, DEFAULT_FUSION if mode == "hybrid" else None, options)]  # type: ignore[arg-type]


@app.command("make-twin")
def make_twin(
    profile: Annotated[
        str,
        typer.Option(help=f"One of {', '.join(PROFILES)} (embedding) or {', '.join(RERANKER_PROFILES)} (reranker)."),
    ] = DEFAULT_PROFILE,
    out: Annotated[Path, typer.Option(help="Directory to write the model to.")] = Path("twin"),
    small: Annotated[bool, typer.Option(help="A tiny twin (2 layers, hidden 64) for tests.")] = False,
    corpus: Annotated[list[Path] | None, typer.Option(help="Extra Korean text files for the tokenizer.")] = None,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing twin in --out.")] = False,
) -> None:
    """Build an architecture twin of a profile: same config, random weights, Korean-trained tokenizer."""
    from config.profiles import RerankerProfile
    from services.embedding.twin import build_twin, read_corpus_files, twin_profile

    try:
        prof = twin_profile(profile)
    except ValueError as exc:
        _fail(str(exc))
    for path in corpus or []:
        if not path.is_file():
            _fail(f"--corpus {path}: no such file")
    texts = list(read_corpus_files(corpus)) if corpus else None
    try:
        path = build_twin(prof, out, small=small, corpus=texts, seed=seed, overwrite=overwrite)
    except FileExistsError:
        _fail(f"{out} already exists: pass --overwrite to replace it")
    variables = "SAEKIN_RERANK" if isinstance(prof, RerankerProfile) else "SAEKIN_EMBEDDING"
    typer.echo(
        f"twin of {prof.hub_id} written to {path}; use it with {variables}_PROFILE={prof.name} "
        f"{variables}_MODEL={path.resolve()}"
    )


@app.command("export-encoder")
def export_encoder(
    backend: Annotated[str | None, typer.Option(help="onnx or openvino. Default: SAEKIN_EMBEDDING_BACKEND.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32 or int8 (openvino: bf16 too). Default: SAEKIN_EMBEDDING_PRECISION, else fp32."),
    ] = None,
    optimization: Annotated[
        str | None, typer.Option(help="ONNX Runtime level O1, O2 or O3. Default: SAEKIN_EMBEDDING_ONNX_OPTIMIZATION.")
    ] = None,
    check: Annotated[
        int, typer.Option(help="Sentences to compare with fp32 PyTorch after the export (0: no check).", min=0)
    ] = 32,
) -> None:
    """Export the embedding model for a CPU backend (ONNX Runtime or OpenVINO) into
    SAEKIN_DATA_DIR/encoders, once; the service and workers then load the exported files."""
    from tqdm import tqdm

    from services.embedding.backends import BackendSpec, centred_cosine, model_key, planned_stages
    from services.embedding.encoder import Encoder
    from services.embedding.twin import CORPUS_PATH

    settings = _settings()
    name = backend or settings.embedding_backend
    if name == "torch":
        _fail("the torch backend needs no export: pass --backend onnx or openvino (or set SAEKIN_EMBEDDING_BACKEND)")
    try:
        spec = BackendSpec.resolve(
            name, precision or settings.embedding_precision, optimization or settings.embedding_onnx_optimization
        )
    except ValueError as exc:
        _fail(str(exc))
    model = settings.model_name_or_path
    root = settings.encoder_export_dir
    stages = planned_stages(root, model_key(model), spec)
    bar = tqdm(total=len(stages), desc=f"export {spec.name}", unit="stage", file=sys.stderr, disable=not stages)

    started_stages = [0]

    def progress(stage: str) -> None:  # called as each stage starts
        if started_stages[0]:
            bar.update(1)
        started_stages[0] += 1
        bar.set_postfix_str(stage)

    started = time.perf_counter()
    try:
        enc = Encoder(
            model,
            settings.profile,
            device="cpu",
            precision=spec.precision,
            backend=spec.backend,
            onnx_optimization=spec.optimization,
            export_dir=root,
            export_progress=progress,
        )
    except (ValueError, RuntimeError) as exc:
        bar.close()
        _fail(str(exc))
    bar.update(bar.total - bar.n)
    bar.close()
    what = "exported" if stages else "already exported"
    typer.echo(f"{model}: {spec.name} {what} in {enc.export_path} ({time.perf_counter() - started:.0f} s)")
    if check:
        lines = [t for t in CORPUS_PATH.read_text(encoding="utf-8").splitlines() if t and not t.startswith("#")]
        texts = lines[:: max(1, len(lines) // check)][:check]
        got = enc.encode_documents(texts)
        del enc
        ref = Encoder(model, settings.profile, device="cpu", precision="fp32").encode_documents(texts)
        cos = centred_cosine(got, ref)
        typer.echo(
            f"agreement with fp32 PyTorch over {len(texts)} sentences: centred cosine min {cos.min():.4f}, "
            f"mean {cos.mean():.4f}"
        )
    typer.echo(
        f"use it with SAEKIN_EMBEDDING_BACKEND={spec.backend} SAEKIN_EMBEDDING_PRECISION={spec.precision}"
        + (f" SAEKIN_EMBEDDING_ONNX_OPTIMIZATION={spec.optimization}" if spec.optimization else "")
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
