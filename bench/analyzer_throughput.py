"""Analyzer throughput on the AutoRAG Korean corpus: serial and with Kiwi's worker threads.

Measures ``KoreanAnalyzer.analyze`` (one Kiwi pass: sentences + morphemes + content terms
and bigrams) text by text on the calling thread, then ``analyze_many`` over all texts with
Kiwi's worker threads. Prints one JSON object:
``{"chars", "serial_chars_per_s", "threaded_chars_per_s", "num_workers", "cores", ...}``.

    .venv/bin/python bench/analyzer_throughput.py [--data ../shared/data/autorag-ko] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.evaluation.datasets import load_dataset  # noqa: E402
from services.ingest.analyzer import KoreanAnalyzer  # noqa: E402
from services.ingest.normalize import normalize_text  # noqa: E402


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "autorag-ko")
    parser.add_argument("--workers", type=int, default=cores, help="Kiwi worker threads (default: cores)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the corpus per measurement")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    texts = [normalize_text(t) for t in dataset.corpus.values()] * args.repeat
    chars = sum(len(t) for t in texts)

    t0 = time.perf_counter()
    analyzer = KoreanAnalyzer(num_workers=args.workers)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    serial = [analyzer.analyze(t) for t in texts]
    serial_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    threaded = analyzer.analyze_many(texts)
    threaded_s = time.perf_counter() - t0
    if threaded != serial:
        raise SystemExit("analyze_many and analyze disagree")

    print(
        json.dumps(
            {
                "chars": chars,
                "texts": len(texts),
                "serial_chars_per_s": round(chars / serial_s),
                "threaded_chars_per_s": round(chars / threaded_s),
                "threaded_chars_per_s_per_worker": round(chars / threaded_s / max(1, args.workers)),
                "num_workers": args.workers,
                "cores": cores,
                "sentences": sum(len(s) for s in serial),
                "terms": sum(len(x.terms) for s in serial for x in s),
                "load_s": round(load_s, 2),
                "serial_s": round(serial_s, 2),
                "threaded_s": round(threaded_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
