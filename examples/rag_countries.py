"""The package's mission end to end on the countryinfo knowledge base (`make demo`).

A thin script: everything is in `keras_ragkd.demo` (also `keras-ragkd demo`).
It builds the knowledge base and its MiniLM index, trains a RAG teacher,
caches its outputs, distils a small RAG student with the `Distiller`, trains
the same student without distillation, evaluates them with a closed-book
model on held-out countries, exports the distilled student as a SavedModel,
answers with it in a fresh process that cannot import this package, and
hot-swaps the knowledge base. It prints a summary table against the targets
and writes `runs/<timestamp>/`.

Run: `python examples/rag_countries.py [--full | --smoke] [--teacher-seconds 300] ...`
(`--help` lists every budget).
"""

import sys

from keras_ragkd.demo import main

if __name__ == "__main__":
    sys.exit(main())
