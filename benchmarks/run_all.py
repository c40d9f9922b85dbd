"""Runs every benchmark in this folder, one after another.

Each `*_bench.py` script measures keras_ragkd side by side with its peer in
one process and writes JSON (and a PNG) under `benchmarks/results/`.

Example:

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # a few minutes in all
"""

import pathlib
import subprocess
import sys

BENCHMARKS = (
    "distiller_bench.py", "retrieval_bench.py", "serving_bench.py", "rag_quality_bench.py",
    "decoder_cache_bench.py",
)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    here = pathlib.Path(__file__).resolve().parent
    failed = []
    for script in BENCHMARKS:
        print(f"==> {script} {' '.join(argv)}", flush=True)
        result = subprocess.run([sys.executable, str(here / script), *argv])
        if result.returncode != 0:
            failed.append(script)
    if failed:
        print(f"Failed benchmarks: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
