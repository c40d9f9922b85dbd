"""The `keras-ragkd` command: build and query the embedded knowledge base.

Example:

    keras-ragkd build-index /tmp/countries_index
    keras-ragkd search /tmp/countries_index "What is the capital of France?" -k 3
"""

import argparse
import json
import sys

from keras_ragkd.data import country_passages
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import load_minilm_encoder


def build_index(args):
    """Encodes the countryinfo passages with MiniLM and saves a FAISS index."""
    passages = country_passages(args.countries)
    encoder = load_minilm_encoder(sequence_length=args.sequence_length)
    index = PassageIndex.build(
        passages, encoder, index_factory=args.index_factory, verbose=args.verbose
    )
    index.save(args.directory)
    print(f"Saved {index!r}")
    return 0


def search(args):
    """Prints the top-k passages of each query as JSON lines."""
    index = PassageIndex.load(args.directory)
    sequence_length = _sequence_length_of(index.encoder_identity)
    index.encoder = load_minilm_encoder(sequence_length=sequence_length)
    result = index.search(args.queries, k=args.k)
    for query, ids, scores, valid in zip(
        args.queries, result.passage_ids, result.scores, result.mask
    ):
        hits = [
            {"id": passage_id, "score": round(float(score), 4),
             "text": index.get(passage_id).text}
            for passage_id, score, ok in zip(ids, scores, valid)
            if ok
        ]
        print(json.dumps({"query": query, "hits": hits}))
    return 0


def _sequence_length_of(encoder_identity):
    """Reads `L` from a MiniLM identity `all-MiniLM-L6-v2/seq<L>/<hash>`."""
    name, _, rest = encoder_identity.partition("/seq")
    if name != "all-MiniLM-L6-v2" or not rest.partition("/")[0].isdigit():
        raise ValueError(
            "`keras-ragkd search` queries indexes built with the MiniLM "
            "encoder (`keras-ragkd build-index`); load other indexes with "
            "`PassageIndex.load(directory, encoder=...)` in Python. "
            f"Received: encoder_identity={encoder_identity!r}"
        )
    return int(rest.partition("/")[0])


def make_parser():
    parser = argparse.ArgumentParser(
        prog="keras-ragkd",
        description="Build and query the embedded countryinfo knowledge base.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-index", help=build_index.__doc__)
    build.add_argument("directory", help="folder to write the index to")
    build.add_argument("--index-factory", default="Flat",
                       help='a faiss.index_factory string, e.g. "HNSW32"')
    build.add_argument("--countries", nargs="*", default=None,
                       help="only these countries (default: all)")
    build.add_argument("--sequence-length", type=int, default=64)
    build.add_argument("--verbose", type=int, default=1)
    build.set_defaults(run=build_index)

    query = commands.add_parser("search", help=search.__doc__)
    query.add_argument("directory", help="an index folder from build-index")
    query.add_argument("queries", nargs="+", help="query strings")
    query.add_argument("-k", type=int, default=5, help="passages per query")
    query.set_defaults(run=search)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
