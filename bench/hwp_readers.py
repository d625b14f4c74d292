"""Compare HWP/HWPX readers on PyPI with Saekin's own reader on the real fixtures; print JSON.

Readers: saekin (services.ingest.extract.extract_file), rhwp-python, unhwp, python-hwpx,
hwp-hwpx-parser and pyhwp (hwp5). A library that is not installed is skipped with a note. The
libraries are not Saekin dependencies: install them in a scratch environment and name its Python:

    python3 -m venv /tmp/libcmp
    /tmp/libcmp/bin/pip install rhwp-python unhwp python-hwpx hwp-hwpx-parser pyhwp six
    nice -n 10 .venv/bin/python bench/hwp_readers.py --lib-python /tmp/libcmp/bin/python

Each reader reads each file in its own child process (a fresh interpreter: import, parse, text),
through a small launcher whose resource.getrusage(RUSAGE_CHILDREN).ru_maxrss is that child's peak
RSS; wall_s is the launcher's clock around the child and parse_s the reader's own call. Fixtures
are read from ../shared/fixtures (*.hwp, *.hwpx) at run time; the damaged copies for the
robustness part are made in a temporary folder and removed afterwards.

Per reader and file: ok or the error, Hangul syllables in everything it returns as text (body,
tables, notes, headers), coverage of the per-file union of syllables (a syllable counts as often
as the reader that returns it most often) and relative to the best reader, private-use characters
left in the text, tables and merged cells as the reader reports them, headings, probes (strings
known to be in a header, a footnote, an endnote, a table cell or a numbered heading: found or
not), and for the 배포용 document what the reader says.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
READERS = ("saekin", "rhwp", "unhwp", "python-hwpx", "hwp-hwpx-parser", "pyhwp")
#: Import name and PyPI name of each library (for the 'not installed' note and the version).
PACKAGES = {
    "rhwp": ("rhwp", "rhwp-python"),
    "unhwp": ("unhwp", "unhwp"),
    "python-hwpx": ("hwpx", "python-hwpx"),
    "hwp-hwpx-parser": ("hwp_hwpx_parser", "hwp-hwpx-parser"),
    "pyhwp": ("hwp5", "pyhwp"),
}
#: Text of the two synthetic HWP files made at run time with the project's test builders (from the
#: public format specification): the same paragraph as an ordinary HWP and as a 배포용 one (AES in
#: ViewText, key in the file). A reader that reads the first but not the second does not decrypt.
SYNTHETIC_TEXT = "배포용 문서의 본문에는 주민등록 발급 수수료 안내가 들어 있다."
#: Strings a reader should return for each fixture, by what they are in the document (checked with
#: all whitespace removed). The 2024 HWPX's "1.개요두번째" stands twice (table of contents and body)
#: when the body keeps its automatic outline number.
PROBES: dict[str, dict[str, list[str]]] = {
    "pyhwp_sample-5017.hwp": {
        "header": ["머리말입니다"],
        "footnote": ["이건각주이지요"],
        "endnote": ["미주입니다"],
        "table_cell": ["B10", "B11", "table2"],
        "caption": ["2x2짜리표"],
        "old_hangul": ["\u1112\u119e\u11ab글"],
    },
    "hwp_gov_award_forms.hwp": {
        "table_cell": ["추천제한조회결과", "세금체납", "포상명", "범죄경력", "임금체불"],
    },
    "gangnam_notice_2023-745.hwpx": {
        "body": ["서울특별시강남구청장", "입법예고"],
    },
    "hwpx_toc_headings_h2024.hwpx": {
        "numbered_heading_twice": ["1.개요첫번째", "2.개요두번째"],
    },
    "hwp_distribution_doc.hwp": {},
    "synthetic_plain.hwp": {"body": [SYNTHETIC_TEXT]},
    "synthetic_distribution.hwp": {"body": [SYNTHETIC_TEXT]},
}
#: Hancom's placeholder in a 배포용 document's BodyText (the real body is in ViewText).
DISTRIBUTION_NOTICE = "배포용문서입니다"
HANGUL = re.compile("[\uac00-\ud7a3]")
PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
SPACE = re.compile(r"\s+")


# ---------------------------------------------------------------------------------------------
# Worker: one reader, one file, in a fresh interpreter. Prints one JSON object.


def _read_saekin(path: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from services.ingest.extract import extract_file

    start = time.perf_counter()
    # The reader as the sandbox's child runs it: Korean word decisions (Kiwi) are made once per
    # worker afterwards, not per document, so they are not part of the reader's time.
    doc = extract_file(path, resolve_wraps=False)
    parse_s = time.perf_counter() - start
    headings = list(dict.fromkeys(s.heading for s in doc.sections if s.heading))
    return {
        "parse_s": parse_s,
        "text": doc.text,
        "title": doc.title,
        "tables": sum(1 for s in doc.sections if s.table),
        "merged_cells": None,  # merged cells are written once; spans are not reported
        "headings": len(headings),
        "heading_sample": headings[:3],
    }


def _read_rhwp(path: Path) -> dict:
    import rhwp

    start = time.perf_counter()
    ir = rhwp.parse(str(path)).to_ir()
    parts: list[str] = []
    tables = merged = 0
    headings: list[str] = []
    # Body, then headers, footers, footnotes and endnotes; recursing into table cells and notes.
    for block in ir.iter_blocks(scope="all", recurse=True):
        kind = block.kind
        if kind in ("paragraph", "list_item", "caption"):
            parts.append(block.text)
            if kind == "list_item" and block.enumerated:
                headings.append(f"{block.marker} {block.text}")
        elif kind == "table":
            tables += 1
            merged += sum(1 for c in block.cells if c.row_span > 1 or c.col_span > 1)
    parse_s = time.perf_counter() - start
    return {
        "parse_s": parse_s,
        "text": "\n".join(parts),
        "title": ir.metadata.title,
        "tables": tables,
        "merged_cells": merged,
        "headings": len(headings),
        "heading_sample": headings[:3],
        "note": "numbered and outline paragraphs are list items with a placeholder marker '1.'",
    }


def _read_unhwp(path: Path) -> dict:
    import unhwp

    start = time.perf_counter()
    with unhwp.parse(str(path)) as result:
        text = result.text
        tables = len(result.get_tables())
        markdown = result.markdown
        distribution = result.is_distribution
        title = result.title
    parse_s = time.perf_counter() - start
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    return {
        "parse_s": parse_s,
        "text": text,
        "title": title,
        "tables": tables,
        "merged_cells": None,
        "headings": len(headings),
        "heading_sample": headings[:3],
        "is_distribution": distribution,
    }


def _read_python_hwpx(path: Path) -> dict:
    import warnings

    from hwpx import HwpxDocument
    from hwpx.tools.exporter import export_text

    warnings.simplefilter("ignore")
    start = time.perf_counter()
    doc = HwpxDocument.open(str(path))  # .hwp is converted to the HWPX model first
    text = export_text(doc, list_labels=True, notes=True)
    parse_s = time.perf_counter() - start
    tables = doc.tables.all  # the tables of body paragraphs (not those nested in cells)
    merged = sum(1 for table in tables for row in table.rows for cell in row.cells if cell.span != (1, 1))
    return {
        "parse_s": parse_s,
        "text": text,
        "title": None,
        "tables": len(tables),
        "merged_cells": merged,
        "headings": None,  # only a text heuristic in its Markdown export
        "heading_sample": [],
    }


def _read_hwp_hwpx_parser(path: Path) -> dict:
    from hwp_hwpx_parser import Reader

    start = time.perf_counter()
    with Reader(str(path)) as reader:
        result = reader.extract_text_with_notes()
        tables = len(reader.tables)
    parse_s = time.perf_counter() - start
    notes = [n.text for n in [*result.footnotes, *result.endnotes]]
    return {
        "parse_s": parse_s,
        "text": "\n".join([result.text, *notes]),
        "title": None,
        "tables": tables,
        "merged_cells": None,
        "headings": None,
        "heading_sample": [],
    }


def _read_pyhwp(path: Path) -> dict:
    import io
    from contextlib import closing

    if path.suffix.lower() != ".hwp":
        raise NotImplementedError("pyhwp reads HWP 5 only")
    from hwp5.hwp5txt import TextTransform
    from hwp5.xmlmodel import Hwp5File

    start = time.perf_counter()
    out = io.BytesIO()
    with closing(Hwp5File(str(path))) as hwp5file:
        TextTransform().transform_hwp5_to_text(hwp5file, out)
    text = out.getvalue().decode("utf-8")
    parse_s = time.perf_counter() - start
    tables = text.count("<표>")
    # Its placeholders for tables and pictures are not document text (and would count as Hangul).
    text = text.replace("<표>", "").replace("<그림>", "")
    return {
        "parse_s": parse_s,
        "text": text,
        "title": None,
        "tables": tables,
        "merged_cells": None,
        "headings": None,
        "heading_sample": [],
        "note": "hwp5txt writes each table as '<표>' without its cells",
    }


ADAPTERS = {
    "saekin": _read_saekin,
    "rhwp": _read_rhwp,
    "unhwp": _read_unhwp,
    "python-hwpx": _read_python_hwpx,
    "hwp-hwpx-parser": _read_hwp_hwpx_parser,
    "pyhwp": _read_pyhwp,
}


def worker(reader: str, path: Path) -> dict:
    try:
        out = ADAPTERS[reader](path)
        out["ok"] = True
    except BaseException as exc:  # a Rust panic (pyo3 PanicException) is a BaseException
        out = {"ok": False, "error": f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def probe(reader: str) -> dict:
    """Is the library importable, and which version."""
    if reader == "saekin":
        return {"available": True, "version": "own reader"}
    module, dist = PACKAGES[reader]
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(dist)
    except PackageNotFoundError:
        return {"available": False, "note": f"{dist} is not installed: skipped"}
    try:
        __import__(module)
    except BaseException as exc:
        return {"available": False, "version": found, "import_error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"available": True, "version": found}


# ---------------------------------------------------------------------------------------------
# Launcher: runs one worker, reports its wall time and peak RSS (this process's only child).


def launch(python: str, reader: str, path: Path, timeout: float, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    cmd = [python, str(Path(__file__).resolve()), "--worker", reader, str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"ok": False, "outcome": "hang", "error": f"no answer within {timeout:.0f} s (killed)"}
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    try:
        out = json.loads(proc.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        out = {"ok": False, "outcome": "crash", "error": f"exit status {proc.returncode}: {tail[0][:200]}"}
    out["wall_s"] = round(wall, 3)
    out["peak_rss_mb"] = round(rss_mb, 1)
    return out


def run_one(python: str, reader: str, path: Path, timeout: float, env: dict[str, str]) -> dict:
    """One measurement in a fresh launcher process, so RUSAGE_CHILDREN holds this child alone."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--launch", python, reader, str(path), str(timeout)]
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO)
    return json.loads(proc.stdout.decode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Parent: availability, fixtures, damaged copies, summary.


def _squash(text: str) -> str:
    return SPACE.sub("", text)


def _damaged_copies(fixtures: list[Path], folder: Path) -> list[Path]:
    """Deterministic damage: cut at half, cut after 4 KiB, 64 bytes flipped, 4 KiB zeroed in the
    middle; for HWPX also a valid zip whose first section's XML is cut in half."""
    rng = random.Random(18)
    made: list[Path] = []
    for src in fixtures:
        data = src.read_bytes()
        variants = {
            "cut-half": data[: len(data) // 2],
            "cut-4k": data[:4096],
        }
        flipped = bytearray(data)
        for offset in rng.sample(range(512, len(data)), 64):
            flipped[offset] ^= 0xFF
        variants["flip64"] = bytes(flipped)
        zeroed = bytearray(data)
        middle = len(data) // 2
        zeroed[middle : middle + 4096] = bytes(min(4096, len(data) - middle))
        variants["zero4k"] = bytes(zeroed)
        for name, content in variants.items():
            out = folder / f"{src.stem}.{name}{src.suffix}"
            out.write_bytes(content)
            made.append(out)
        if src.suffix.lower() == ".hwpx":
            out = folder / f"{src.stem}.xml-cut{src.suffix}"
            with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
                for item in zin.infolist():
                    body = zin.read(item.filename)
                    if item.filename.lower() == "contents/section0.xml":
                        body = body[: len(body) // 2]
                    compress = zipfile.ZIP_STORED if item.filename == "mimetype" else zipfile.ZIP_DEFLATED
                    zout.writestr(item.filename, body, compress_type=compress)
            made.append(out)
    return made


def _synthetic(folder: Path) -> list[Path]:
    """The synthetic ordinary/배포용 pair (needs the repository's tests package and cryptography)."""
    sys.path.insert(0, str(REPO))
    from tests import extract_samples as samples

    body = samples.para_records(SYNTHETIC_TEXT)
    plain = folder / "synthetic_plain.hwp"
    plain.write_bytes(samples.build_hwp([body]))
    distribution = folder / "synthetic_distribution.hwp"
    distribution.write_bytes(samples.build_distribution_hwp([body]))
    return [plain, distribution]


def _outcome(res: dict, text: str) -> str:
    """text (Hangul returned), empty (no error, no Hangul), error, panic (a Rust panic reached
    Python), crash (the process died), hang (killed at the time limit), n/a (format not read)."""
    if res.get("outcome"):
        return str(res["outcome"])
    if res.get("ok"):
        return "text" if HANGUL.search(text) else "empty"
    error = str(res.get("error", ""))
    if "PanicException" in error:
        return "panic"
    return "n/a" if error.startswith("builtins.NotImplementedError") else "error"


def _freetype() -> str | None:
    for candidate in ("/lib/x86_64-linux-gnu/libfreetype.so.6", "/usr/lib/x86_64-linux-gnu/libfreetype.so.6"):
        if os.path.exists(candidate):
            return candidate
    return None


def _readers(args: argparse.Namespace) -> dict[str, dict]:
    """Which readers run, with which Python and environment (and notes for those skipped)."""
    setup: dict[str, dict] = {}
    for reader in args.readers:
        python = args.saekin_python if reader == "saekin" else args.lib_python
        env = dict(os.environ)
        info = _probe(python, reader, env)
        if not info.get("available") and "undefined symbol" in info.get("import_error", "") and _freetype():
            # rhwp-python 0.8.1's wheel bundles a libfreetype older than its code needs
            # (DanMeon/rhwp-python#31): retried with the system's.
            env["LD_PRELOAD"] = _freetype() or ""
            retry = _probe(python, reader, env)
            if retry.get("available"):
                retry["note"] = (
                    f"import fails as installed ({info['import_error']}); measured with LD_PRELOAD={_freetype()}"
                )
            info = retry
        setup[reader] = {"python": python, "env": env, "info": info}
    return setup


def _probe(python: str, reader: str, env: dict[str, str]) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--probe", reader]
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO)
    try:
        return json.loads(proc.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"available": False, "import_error": proc.stderr.decode("utf-8", "replace")[-300:]}


def _summarise(file: Path, results: dict[str, dict]) -> None:
    """Adds Hangul counts, coverage of the union and of the best reader, probes, PUA counts."""
    counts = {r: Counter(HANGUL.findall(res.get("text", ""))) for r, res in results.items() if res.get("ok")}
    union: Counter[str] = Counter()
    for c in counts.values():
        union |= c
    best = max((sum(c.values()) for c in counts.values()), default=0)
    total = sum(union.values())
    for reader, res in results.items():
        text = res.pop("text", "")
        if not res.get("ok"):
            continue
        c = counts[reader]
        n = sum(c.values())
        res["hangul"] = n
        res["coverage_union"] = round(sum((c & union).values()) / total, 3) if total else None
        res["coverage_best"] = round(n / best, 3) if best else None
        res["private_use"] = len(PRIVATE_USE.findall(text))
        squashed = _squash(text)
        found: dict[str, str] = {}
        for what, strings in PROBES.get(file.name, {}).items():
            need = 2 if what.endswith("_twice") else 1
            hits = sum(1 for s in strings if squashed.count(_squash(s)) >= need)
            found[what] = f"{hits}/{len(strings)}"
        res["probes"] = found
        if DISTRIBUTION_NOTICE in squashed:
            res["distribution_notice_indexed"] = True
        res["parse_s"] = round(res.get("parse_s", 0.0), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib-python", default="/tmp/libcmp/bin/python", help="Python with the libraries")
    parser.add_argument("--saekin-python", default=sys.executable, help="Python with Saekin's dependencies")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--readers", nargs="+", default=list(READERS), choices=READERS)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per reader and file")
    parser.add_argument("--no-damaged", action="store_true", help="skip the robustness part")
    parser.add_argument("--worker", nargs=2, metavar=("READER", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--launch", nargs=4, metavar=("PY", "READER", "FILE", "TIMEOUT"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="READER", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1])), ensure_ascii=False))
        return
    if args.launch:
        python, reader, file, timeout = args.launch
        print(json.dumps(launch(python, reader, Path(file), float(timeout), dict(os.environ)), ensure_ascii=False))
        return
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return

    if not Path(args.lib_python).exists():
        args.lib_python = sys.executable  # no scratch environment: libraries importable here, or skipped
    fixtures = sorted([*args.fixtures.glob("*.hwp"), *args.fixtures.glob("*.hwpx")])
    setup = _readers(args)
    active = [r for r, s in setup.items() if s["info"].get("available")]
    scratch = tempfile.TemporaryDirectory(prefix="hwp-readers-")
    try:
        fixtures_and_synthetic = [*fixtures, *_synthetic(Path(scratch.name))]
    except ImportError as exc:
        print(f"synthetic 배포용 pair skipped: {exc}", file=sys.stderr)
        fixtures_and_synthetic = fixtures
    report: dict = {
        "readers": {r: s["info"] for r, s in setup.items()},
        "python": {"saekin": args.saekin_python, "libraries": args.lib_python},
        "files": {},
        "damaged": {},
    }
    for file in fixtures_and_synthetic:
        results = {}
        for reader in active:
            results[reader] = run_one(setup[reader]["python"], reader, file, args.timeout, setup[reader]["env"])
            print(f"{file.name} {reader}: {'ok' if results[reader].get('ok') else 'error'}", file=sys.stderr)
        _summarise(file, results)
        report["files"][file.name] = results

    if not args.no_damaged:
        with tempfile.TemporaryDirectory(prefix="hwp-damaged-") as folder:
            for copy in _damaged_copies(fixtures, Path(folder)):
                row = {}
                for reader in active:
                    res = run_one(setup[reader]["python"], reader, copy, args.timeout, setup[reader]["env"])
                    text = res.pop("text", "")
                    row[reader] = {
                        "outcome": _outcome(res, text),
                        "hangul": len(HANGUL.findall(text)) if res.get("ok") else None,
                        "error": res.get("error"),
                        "wall_s": res.get("wall_s"),
                    }
                report["damaged"][copy.name] = row
                print(f"{copy.name}: {json.dumps({r: v['outcome'] for r, v in row.items()})}", file=sys.stderr)
        tally: dict[str, Counter[str]] = {r: Counter() for r in active}
        for row in report["damaged"].values():
            for reader, res in row.items():
                tally[reader][res["outcome"]] += 1
        report["damaged_summary"] = {r: dict(c) for r, c in tally.items()}
    scratch.cleanup()
    print(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
