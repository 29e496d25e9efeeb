"""Benchmark: the quick audit a run starts with, cold and kept (issue 24: <= 10 s for 70,000 28-px images).

Decodes DATA once into the image cache (as ``nextclass train`` does; not timed), draws the default split, then times
:func:`nextclass.data.quick_audit.audit_decoded` twice with an empty audit cache: the first call fingerprints and searches,
the second reads the report kept under the cache. Prints JSON: seconds of each, what the audit found, and whether its
near-duplicate search had to narrow (crowded hashes, e.g. digits).

    python bench/quick_audit.py fashion-mnist
    python bench/quick_audit.py /tmp/nextclass-bench/digits28     # bench/digit_data.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from nextclass.data.quick_audit import audit_decoded
from nextclass.data.cache import DecodeSpec, decode_all
from nextclass.data.sources import load_source
from nextclass.data.splits import assign_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--size", type=int, default=28, help="cache resolution (the run's img_size)")
    args = ap.parse_args()
    source = load_source(args.data)
    assign_splits(source, (0.7, 0.2, 0.1), 0)
    images = decode_all(source, list(range(len(source.samples))), DecodeSpec(args.size, 1), progress=False)
    out, times, rep = tempfile.mkdtemp(prefix="quick-audit-"), [], {}
    for k in range(2):
        t = time.perf_counter()
        rep = audit_decoded(source, images, f"{out}/audit{k}.json", cache_dir=f"{out}/cache")
        times.append(round(time.perf_counter() - t, 2))
    s = rep["summary"]
    print(json.dumps({"benchmark": "quick_audit", "data": args.data, "images": len(source.samples),
                      "cold_s": times[0], "kept_s": times[1], "near_threshold": s["near_threshold"],
                      "narrowed": s.get("near_narrowed"), "near_candidates": s["near_candidates"],
                      "near_pairs": s["near_pairs"], "cross_split": s["cross_split"]}, indent=2))


if __name__ == "__main__":
    main()
