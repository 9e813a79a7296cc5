"""Read times of hostile and fuzzed image files: the timing that tests/test_fuzz_images.py leaves out.

The tests prove that each file decodes or is named, and that a decompression bomb is refused from its
header without loading pixels; this measures how long that takes. For each seed format, the same
seeded mutations as the test (100 a format) are read with ``images.read_image``, and the unmutated seed
file with plain PIL (``Image.open(...).convert("RGB")``) as the reference, in the same run, interleaved;
the bombs are timed against PIL opening the same files' headers. The table gives medians and the
slowest read as ratios to the reference (targets: median under 3x PIL's, slowest under 2 s).

    python benchmarks/fuzz_images.py
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from PIL import Image

from inceptorch.cpu import describe, machine
from inceptorch.errors import DataError
from inceptorch.images import read_image
from inceptorch.tables import text_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the test's seed files, mutations and hostile folder
from test_fuzz_images import hostile_folder, mutate, seed_files


def _seconds(read, path: Path) -> float:
    started = time.perf_counter()
    try:
        read(path)
    except (DataError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        pass
    return time.perf_counter() - started


def _plain_pil(path: Path) -> None:
    with Image.open(path) as opened:
        opened.convert("RGB")


def _header_only(path: Path) -> None:
    with Image.open(path):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutations", type=int, default=100, help="mutated files a format (default 100)")
    parser.add_argument("--json", metavar="FILE", help="output (default: benchmarks/results/fuzz_images.json)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the mutated files make PIL and numpy warn by the hundred
    info, rng, rows = machine(), random.Random(8), []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, content in seed_files().items():
            seed = folder / f"seed-{name}"
            seed.write_bytes(content)
            ours, reference = [], []
            for i in range(args.mutations):
                path = folder / f"{i}-{name}"
                path.write_bytes(mutate(content, rng))
                ours.append(_seconds(read_image, path))
                reference.append(_seconds(_plain_pil, seed))
            rows.append({"files": name, "median_s": statistics.median(ours), "slowest_s": max(ours),
                         "reference_median_s": statistics.median(reference)})
        (folder / "outside").mkdir()
        (folder / "hostile").mkdir()
        hostile_folder(folder / "hostile", folder / "outside")
        for name in ("bomb.png", "wide.png"):
            path = folder / "hostile" / name
            ours = [_seconds(read_image, path) for _ in range(20)]
            reference = [_seconds(_header_only, path) for _ in range(20)]
            rows.append({"files": name, "median_s": statistics.median(ours), "slowest_s": max(ours),
                         "reference_median_s": statistics.median(reference)})
    for row in rows:
        row["median_vs_reference"] = row["median_s"] / row["reference_median_s"]
    print(text_table(["files", "median ms", "slowest ms", "reference ms", "median vs reference"],
                     [[r["files"], f"{r['median_s'] * 1e3:.2f}", f"{r['slowest_s'] * 1e3:.2f}",
                       f"{r['reference_median_s'] * 1e3:.2f}", f"{r['median_vs_reference']:.2f}x"] for r in rows]))
    print(describe(info))
    out = Path(args.json) if args.json else RESULTS / "fuzz_images.json"
    out.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
