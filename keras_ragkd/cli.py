"""The `keras-ragkd` command: knowledge bases, RAG models and distillation on your data.

Example:

    keras-ragkd index build --corpus passages.jsonl --out kb/ --encoder tfidf
    keras-ragkd index query kb/ "What is the capital of France?" -k 3
    keras-ragkd train --index kb/ --data qa.jsonl --out teacher/ --generator base --epochs 20
    keras-ragkd distill --teacher teacher/ --data qa.jsonl --out student/ --student small
    keras-ragkd evaluate student/ test_qa.jsonl
    keras-ragkd ask student/ "What is the capital of France?" --show-passages
    keras-ragkd export student/ student_savedmodel/

Results go to stdout (JSON), progress bars and errors to stderr. Bad input
(a missing or malformed file, an output folder that exists, an index built
with another encoder, ...) is one line on stderr and exit status 2, with
nothing written.
"""

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import textwrap

from keras_ragkd.data import DataFileError
from keras_ragkd.data import read_corpus
from keras_ragkd.data import read_qa_pairs
from keras_ragkd.io_utils import replace_directory
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import check_index_factory
from keras_ragkd.retrieval import encoder_records

EXIT_BAD_INPUT = 2
EXIT_DAMAGED = 1
PROG = "keras-ragkd"
SAVED_MODEL_FILE = "saved_model.pb"
DEFAULT_FACTORY = "Flat"
CACHE_TOP_K = 32


class BadInput(Exception):
    """Input the command cannot use; printed as one line, exit status 2."""


@contextlib.contextmanager
def checking(what=None):
    """Turns the errors of reading/validating input into `BadInput`."""
    try:
        yield
    except BadInput:
        raise
    except (DataFileError, ValueError, TypeError, KeyError, OSError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        if what and what not in message:
            message = f"{what}: {message}"
        raise BadInput(message) from None


# Outputs: checked first, written whole at the end.


def check_output(path, overwrite, flag="--out", inputs=()):
    """Refuses an existing output folder without `--overwrite`, or one that is
    also an input of the command; returns the absolute path."""
    path = os.path.abspath(path)
    for name, value in inputs:
        if value and os.path.abspath(value) == path:
            raise BadInput(
                f"{flag} must not be the {name} folder it reads. Received: {flag}={path!r}"
            )
    if os.path.lexists(path) and not overwrite:
        raise BadInput(
            f"{path} already exists; pass --overwrite to replace it. "
            f"Received: {flag}={path!r}"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise BadInput(f"{path} is a file, not a folder. Received: {flag}={path!r}")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise BadInput(
            f"The folder {parent} does not exist. Received: {flag}={path!r}"
        )
    return path


@contextlib.contextmanager
def staged_output(path):
    """Yields a staging folder beside `path`, moved onto `path` on success."""
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path)
    )
    try:
        yield staging
        replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def emit(args, record):
    """Writes one JSON line to the command's real stdout."""
    args.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    args.stdout.flush()


# Inputs.


def load_index(directory, flag="index", need_encoder=True):
    """A saved `PassageIndex`, by default one that can encode string queries."""
    with checking(f"{flag} {directory}"):
        index = PassageIndex.load(directory)
        encoder = index.encoder if need_encoder else None  # Rebuilds and checks MiniLM.
    if need_encoder and encoder is None:
        raise BadInput(
            f"The index {directory} records no encoder to rebuild (it was built "
            "in Python with a custom encoder); build it with `keras-ragkd index "
            f"build`. Received: encoder_identity={index.encoder_identity!r}"
        )
    return index


def read_pairs(path):
    with checking():
        pairs = read_qa_pairs(path)
    return [p["question"] for p in pairs], [p["answer"] for p in pairs]


def load_model(directory, flag="MODEL_DIR"):
    """A `RagQuestionAnswerer` from a folder written by `save_to_preset`."""
    from keras_ragkd.rag import RagQuestionAnswerer

    if not os.path.isdir(directory):
        raise BadInput(f"No such model folder. Received: {flag}={directory!r}")
    if os.path.isfile(os.path.join(directory, SAVED_MODEL_FILE)):
        raise BadInput(
            f"{directory} is an exported SavedModel (only `ask` reads those); "
            f"give a model folder written by `train` or `distill`. Received: {flag}={directory!r}"
        )
    with checking(f"model {directory}"):
        return RagQuestionAnswerer.from_preset(directory)


def check_same_encoder(query_encoder, index, where):
    """Refuses an index whose vectors come from another encoder than the model's."""
    with checking(where):
        encoder_records.check_query_encoder(query_encoder, index)


def swap_index(model, args):
    """The model reading `--index` if given (checked against its encoder)."""
    if not getattr(args, "index", None):
        return model
    index = load_index(args.index, "--index", need_encoder=False)
    check_same_encoder(model.rag.query_encoder, index, f"--index {args.index}")
    return model.with_index(index)


# `index build | info | query`.


def index_build(args):
    check_positive(args.dim, "--dim")
    check_positive(args.batch_size, "--batch-size")
    if args.sequence_length < 3:
        raise BadInput(
            "--sequence-length must be at least 3 ([CLS], a token, [SEP]). "
            f"Received: --sequence-length={args.sequence_length}"
        )
    out = check_output(args.out, args.overwrite, inputs=[("--encoder-from", args.encoder_from)])
    with checking():
        passages = read_corpus(args.corpus)
    texts = [p["title"] + ". " + p["text"] if p["title"] else p["text"] for p in passages]
    if args.encoder_from:
        encoder = load_index(args.encoder_from, "--encoder-from").encoder
        dim = encoder.dim
    elif args.encoder == "tfidf":
        from keras_ragkd.retrieval import TfidfEncoder

        with checking(f"--corpus {args.corpus}"):
            encoder = TfidfEncoder(dim=args.dim).fit(texts)
        dim = encoder.dim
    else:
        from keras_ragkd.models.minilm import EMBEDDING_DIM

        dim, encoder = EMBEDDING_DIM, None
    with checking("--factory"):
        check_index_factory(args.factory, dim, len(passages))
    if encoder is None:
        from keras_ragkd.retrieval import MiniLMEncoder

        encoder = MiniLMEncoder(sequence_length=args.sequence_length, trainable=False)
    index = PassageIndex.build(
        passages, encoder, index_factory=args.factory, batch_size=args.batch_size,
        verbose=1,
    )
    with staged_output(out) as staging:
        index.save(staging)
    emit(args, PassageIndex.describe(out))
    return 0


def index_info(args):
    with checking(f"index {args.directory}"):
        info = PassageIndex.describe(args.directory, verify_checksums=not args.no_verify)
    emit(args, info)
    if info["checksums"] == "damaged":
        damaged = [name for name, f in info["files"].items() if f["state"] not in ("ok", "size ok")]
        print(
            f"{PROG} index info: error: the index {args.directory} is damaged. Received: "
            + ", ".join(f"{name} ({info['files'][name]['state']})" for name in damaged),
            file=sys.stderr,
        )
        return EXIT_DAMAGED
    return 0


def check_not_blank(texts, name):
    """Refuses an empty or whitespace-only query or question."""
    for text in texts:
        if not text.strip():
            raise BadInput(f"A {name} must not be empty. Received: {name}={text!r}")


def index_query(args):
    check_positive(args.k, "-k")
    check_not_blank(args.queries, "query")
    index = load_index(args.directory)
    with checking("-k"):
        result = index.search(args.queries, k=args.k)
    for query, ids, scores, valid in zip(
        args.queries, result.passage_ids, result.scores, result.mask
    ):
        hits = [
            {"id": passage_id, "score": round(float(score), 4),
             "title": index.get(passage_id).title, "text": index.get(passage_id).text}
            for passage_id, score in zip(ids, scores[valid])
        ]
        emit(args, {"query": query, "hits": hits})
    return 0


def build_index_legacy(args):
    """`build-index DIR`: the embedded countryinfo knowledge base (MiniLM)."""
    from keras_ragkd.data import country_passages
    from keras_ragkd.retrieval import MiniLMEncoder

    with checking("--countries"):
        passages = country_passages(args.countries)
    with checking("--index-factory"):
        check_index_factory(args.index_factory, 384, len(passages))
    encoder = MiniLMEncoder(sequence_length=args.sequence_length, trainable=False)
    index = PassageIndex.build(
        passages, encoder, index_factory=args.index_factory, verbose=args.verbose
    )
    with checking(f"DIR {args.directory}"):
        index.save(args.directory)
    emit(args, PassageIndex.describe(args.directory, verify_checksums=False))
    return 0


# `train`, `distill`.


def check_positive(value, flag):
    if value is not None and not value > 0:
        raise BadInput(f"{flag} must be positive. Received: {flag}={value!r}")


def check_budget(args):
    check_positive(args.seconds, "--seconds")
    check_positive(args.epochs, "--epochs")
    check_positive(args.batch_size, "--batch-size")
    check_positive(args.learning_rate, "--learning-rate")
    if args.num_docs is not None:
        check_positive(args.num_docs, "--num-docs")


def training_budget(args, steps_per_epoch):
    """`(learning_rate, fit_kwargs)` for `--epochs` (cosine decay over the
    steps) or `--seconds` (`TimeLimit` + `TimeCosineDecay`), with a Keras
    progress bar."""
    import keras

    from keras_ragkd.training_budget import TimeCosineDecay
    from keras_ragkd.training_budget import TimeLimit

    if args.seconds is not None:
        callbacks = [TimeLimit(args.seconds), TimeCosineDecay(args.learning_rate, args.seconds)]
        epochs, learning_rate = 1_000_000, args.learning_rate
    else:
        callbacks, epochs = [], args.epochs
        learning_rate = keras.optimizers.schedules.CosineDecay(
            args.learning_rate, decay_steps=max(1, epochs * steps_per_epoch)
        )
    return learning_rate, dict(epochs=epochs, callbacks=callbacks, verbose=1)


def train(args):
    import keras

    from keras_ragkd.rag import RagPreprocessor
    from keras_ragkd.rag import build_rag_question_answerer
    from keras_ragkd.retrieval import keras_query_encoder
    check_budget(args)
    out = check_output(args.out, args.overwrite, inputs=[("--index", args.index)])
    with checking("--generator"):
        check_generator(args.generator)
    questions, answers = read_pairs(args.data)
    index = load_index(args.index, "--index")
    with checking(f"--index {args.index}"):
        query_encoder = keras_query_encoder(index.encoder)
        if hasattr(query_encoder, "trainable"):
            query_encoder.trainable = False  # The index's vectors stay valid.
    keras.utils.set_random_seed(args.seed)
    with checking():
        preprocessor = RagPreprocessor.from_index(
            index, questions + answers, passage_length=args.passage_length,
            answer_length=args.answer_length,
        )
    with checking("--num-docs"):
        model = build_rag_question_answerer(
            index, query_encoder, preprocessor, generator=args.generator,
            num_docs=args.num_docs or 3,
        )
    steps = -(-len(questions) // args.batch_size)
    learning_rate, fit_args = training_budget(args, steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    history = model.fit(questions, answers, batch_size=args.batch_size, shuffle=True, **fit_args)
    save_model(model, out)
    emit(args, {"model": out, "examples": len(questions), **last_logs(history)})
    return 0


def check_generator(name):
    from keras_ragkd.rag import GENERATOR_SIZES

    if name not in GENERATOR_SIZES:
        raise ValueError(
            f"Expected a generator size, one of {sorted(GENERATOR_SIZES)}. "
            f"Received: generator={name!r}"
        )


def save_model(model, out):
    """Writes the model folder (`save_to_preset` replaces `out` atomically)."""
    model.save_to_preset(out)


def last_logs(history):
    logs = {key: round(float(values[-1]), 6) for key, values in history.history.items()}
    return {"epochs": len(history.epoch), "steps": int(history.params.get("steps") or 0)
            * len(history.epoch), **logs}


def distill(args):
    import keras
    import tensorflow as tf

    from keras_ragkd.distillation import Distiller
    from keras_ragkd.distillation import TeacherCache
    from keras_ragkd.rag import build_rag_question_answerer

    check_budget(args)
    check_positive(args.temperature, "--temperature")
    if not 0.0 <= args.alpha <= 1.0:
        raise BadInput(f"--alpha must be in [0, 1]. Received: --alpha={args.alpha!r}")
    out = check_output(args.out, args.overwrite, inputs=[("--teacher", args.teacher)])
    questions, answers = read_pairs(args.data)
    with checking("--student"):
        check_generator(args.student)
    teacher = load_model(args.teacher, "--teacher")
    index = teacher.rag.retriever.index
    num_docs = args.num_docs or teacher.rag.num_docs
    keras.utils.set_random_seed(args.seed)
    fixed_order = teacher.preprocess(questions, answers, batch_size=args.batch_size)
    # The teacher reads the student's passages (its own top `num_docs`), so that
    # the marginal the student learns mixes only passages it sees.
    with checking("--num-docs"):
        cache_teacher = (
            teacher if num_docs == teacher.rag.num_docs
            else teacher.with_index(index, num_docs=num_docs)
        )
        student = build_rag_question_answerer(
            index, teacher.rag.query_encoder, teacher.preprocessor, generator=args.student,
            num_docs=num_docs,
        )
    top_k = min(CACHE_TOP_K, teacher.preprocessor.vocabulary_size - 1)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.cache-", dir=os.path.dirname(out))
    try:
        print("Teacher cache (the teacher runs once):", file=sys.stderr)
        cache = TeacherCache.build(
            cache_teacher, fixed_order, os.path.join(scratch, "teacher_cache"),
            top_k=top_k, temperature=args.temperature, verbose=1,
        )
        cached = cache.attach(fixed_order).unbatch().shuffle(
            len(questions), seed=args.seed, reshuffle_each_iteration=True
        ).batch(args.batch_size)
        cached = cached.apply(tf.data.experimental.assert_cardinality(len(fixed_order)))
        distiller = Distiller(
            None, student, alpha=args.alpha, temperature=args.temperature,
            mask_teacher_errors=args.mask_teacher_errors,
        )
        learning_rate, fit_args = training_budget(args, len(fixed_order))
        distiller.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            # The Distiller ignores the student's padding id in both terms.
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = distiller.fit(cached, shuffle=False, **fit_args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    save_model(student, out)
    emit(args, {
        "model": out, "teacher": os.path.abspath(args.teacher), "examples": len(questions),
        "alpha": args.alpha, "temperature": args.temperature, "num_docs": num_docs,
        "student_parameters": int(student.rag.generator.count_params()),
        "teacher_parameters": int(teacher.rag.generator.count_params()),
        **last_logs(history),
    })
    return 0


# `evaluate`, `ask`, `export`.


def generate_with_progress(model, questions, args):
    import keras

    progbar = keras.utils.Progbar(len(questions), unit_name="question")
    answers = []
    for start in range(0, len(questions), args.batch_size):
        batch = questions[start : start + args.batch_size]
        answers.extend(model.generate(batch, num_beams=args.num_beams))
        progbar.add(len(batch))
    return answers


def evaluate(args):
    from keras_ragkd.rag import answer_scores

    check_positive(args.batch_size, "--batch-size")
    check_positive(args.num_beams, "--num-beams")
    questions, answers = read_pairs(args.data)
    model = swap_index(load_model(args.model), args)
    predictions = generate_with_progress(model, questions, args)
    scores = answer_scores(predictions, answers)
    emit(args, {**scores, "count": len(questions), "model": os.path.abspath(args.model),
                "data": os.path.abspath(args.data),
                "index": model.rag.retriever.index.directory})
    return 0


def ask(args):
    check_positive(args.num_beams, "--num-beams")
    check_not_blank(args.questions, "question")
    if os.path.isfile(os.path.join(args.model, SAVED_MODEL_FILE)):
        return ask_saved_model(args)
    model = swap_index(load_model(args.model), args)
    answers = model.generate(args.questions, num_beams=args.num_beams)
    retrieved = model.retrieve(args.questions) if args.show_passages else None
    for number, (question, answer) in enumerate(zip(args.questions, answers)):
        record = {"question": question, "answer": answer}
        if retrieved is not None:
            record["passages"] = [
                {key: passage[key] for key in ("id", "title", "text", "probability")}
                for passage in retrieved[number]
            ]
        emit(args, record)
    return 0


def ask_saved_model(args):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the tokenizer ops)

    if args.index:
        raise BadInput(
            "An exported SavedModel holds its index; --index applies to model "
            f"folders. Received: --index={args.index!r}"
        )
    if args.num_beams != 1:
        raise BadInput(
            "An exported SavedModel decodes as it was exported (`export "
            f"--num-beams`). Received: --num-beams={args.num_beams}"
        )
    with checking(f"SavedModel {args.model}"):
        loaded = tf.saved_model.load(args.model)
    questions = tf.constant(args.questions)
    outputs = loaded.serve(questions)
    retrieved = loaded.retrieve(questions) if args.show_passages else None
    for number, question in enumerate(args.questions):
        record = {"question": question, "answer": _text(outputs["answers"][number])}
        if retrieved is not None:
            record["passages"] = [
                {"id": _text(passage_id), "text": _text(text), "probability": float(p)}
                for passage_id, text, p in zip(
                    retrieved["passage_ids"][number].numpy(),
                    retrieved["passage_texts"][number].numpy(),
                    retrieved["passage_probabilities"][number].numpy(),
                )
                if passage_id
            ]
        emit(args, record)
    return 0


def _text(value):
    value = value.numpy() if hasattr(value, "numpy") else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def export(args):
    from keras_ragkd.rag.exporting import refuse_approximate_search
    from keras_ragkd.serving import export_model

    check_positive(args.num_beams, "--num-beams")
    out = check_output(args.out_dir, args.overwrite, flag="OUT_DIR",
                       inputs=[("MODEL_DIR", args.model), ("--index", args.index)])
    model = swap_index(load_model(args.model), args)
    with checking(f"model {args.model}"):
        refuse_approximate_search(model, args.exact_retrieval)
    export_model(model, out, exact_retrieval=args.exact_retrieval, num_beams=args.num_beams)
    emit(args, {"saved_model": out, "signatures": ["serve", "retrieve"],
                "model": os.path.abspath(args.model)})
    return 0


def demo(args):
    try:
        module = importlib.import_module("keras_ragkd.demo")
    except ModuleNotFoundError as error:
        if error.name != "keras_ragkd.demo":
            raise
        raise BadInput(
            "The demo is not installed with this version. Received: module='keras_ragkd.demo'"
        ) from None
    return module.main(args.demo_args) or 0


# The parser.

EPILOG = """\
examples:
  keras-ragkd index build --corpus passages.jsonl --out kb/ --encoder tfidf
  keras-ragkd index query kb/ "What is the capital of France?"
  keras-ragkd train --index kb/ --data qa.jsonl --out teacher/ --generator base --epochs 20
  keras-ragkd distill --teacher teacher/ --data qa.jsonl --out student/
  keras-ragkd evaluate student/ test_qa.jsonl
  keras-ragkd ask student/ "What is the capital of France?" --show-passages
  keras-ragkd export student/ student_savedmodel/

Results are JSON on stdout; progress bars and errors go to stderr. Exit
status: 0 on success, 2 for bad input (one line on stderr, nothing
written), 1 when `index info` finds a damaged index.
"""

DATA_HELP = (
    "JSON Lines (.jsonl, one object per line) or CSV (.csv, with a header) file of "
    'question/answer pairs {"question", "answer"}'
)


def _parser(commands, name, help, description, epilog, run):
    parser = commands.add_parser(
        name, help=help, description=textwrap.fill(description, 79), epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def _budget_arguments(parser, epochs, learning_rate):
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"passes over the data (default {epochs}; cosine learning-rate decay)")
    budget.add_argument("--seconds", type=float, default=None, metavar="N",
                        help="train for this many seconds instead (cosine decay over the time)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="examples per step (default 32)")
    parser.add_argument("--learning-rate", type=float, default=learning_rate, metavar="LR",
                        help=f"peak Adam learning rate (default {learning_rate})")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists")
    parser.set_defaults(default_epochs=epochs)


def make_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Retrieval-augmented question answering and its distillation "
        "(Keras 3), on your own passages and question/answer pairs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        title="commands",
    )

    # index
    index = _parser(
        commands, "index", "build, inspect and query a knowledge base (FAISS index)",
        "Build, inspect and query a knowledge base: passages, their embeddings "
        "and a FAISS index in one folder.",
        "examples:\n  keras-ragkd index build --corpus passages.jsonl --out kb/\n"
        "  keras-ragkd index info kb/\n  keras-ragkd index query kb/ \"capital of France\" -k 3",
        None,
    )
    index_commands = index.add_subparsers(dest="index_command", required=True,
                                          metavar="SUBCOMMAND", title="subcommands")
    build = _parser(
        index_commands, "build", "encode a corpus and save its index",
        "Encodes every passage of a corpus and saves a knowledge-base folder: "
        "the FAISS index, the passages, their embeddings, a checksummed "
        "manifest and what is needed to rebuild the encoder (so `index query`, "
        "`train` and Python's `PassageIndex.load` encode strings right away). "
        "Prints the index's `info`.",
        "corpus format:\n"
        '  JSON Lines: {"id": "fr-1", "title": "France", "text": "Paris is the capital."}\n'
        "  CSV:        id,title,text (header row; title may be empty or absent)\n"
        "  Ids must be unique; the title is optional and is encoded with the text.\n\n"
        "examples:\n"
        "  keras-ragkd index build --corpus passages.jsonl --out kb/\n"
        "  keras-ragkd index build --corpus passages.csv --out kb/ --encoder tfidf --dim 256\n"
        "  keras-ragkd index build --corpus big.jsonl --out kb/ --factory HNSW32 --overwrite\n"
        "  keras-ragkd index build --corpus updated.jsonl --out kb2/ --encoder-from kb/",
        index_build,
    )
    build.add_argument("--corpus", required=True, metavar="FILE",
                       help="passages, .jsonl or .csv (fields id, text, optional title)")
    build.add_argument("--out", required=True, metavar="DIR", help="index folder to create")
    build.add_argument("--factory", default=DEFAULT_FACTORY, metavar="FACTORY",
                       help="faiss.index_factory string: Flat (exact, default; exported "
                       "models search exactly), HNSW32, IVF256,Flat, IVF256,PQ16, ...")
    build.add_argument("--encoder", choices=sorted(encoder_records.ENCODER_NAMES),
                       default="minilm",
                       help="minilm: all-MiniLM-L6-v2 sentence embeddings (default); "
                       "tfidf: TF-IDF + SVD fitted on the corpus (fast, no neural model)")
    build.add_argument("--encoder-from", metavar="DIR", default=None,
                       help="reuse the encoder of this index folder instead (e.g. to "
                       "update the knowledge base of a trained model: `ask --index`)")
    build.add_argument("--dim", type=int, default=128, metavar="N",
                       help="tfidf: output dimension (default 128, at most vocabulary-1)")
    build.add_argument("--sequence-length", type=int, default=64, metavar="TOKENS",
                       help="minilm: tokens per passage (default 64)")
    build.add_argument("--batch-size", type=int, default=64, metavar="N",
                       help="passages per encoder call (default 64)")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    info = _parser(
        index_commands, "info", "describe an index folder (JSON)",
        "Prints what an index folder holds, as JSON: passage count, dimension, "
        "FAISS factory, search parameters, the encoder (class, config, "
        "identity, whether it can be rebuilt) and every file's size, SHA-256 "
        "and state. Exit status 1 if a file is missing or damaged.",
        "example:\n  keras-ragkd index info kb/",
        index_info,
    )
    info.add_argument("directory", metavar="DIR", help="an index folder")
    info.add_argument("--no-verify", action="store_true",
                      help="check file sizes only, not SHA-256 checksums")

    query = _parser(
        index_commands, "query", "search an index with text (JSON lines)",
        "Encodes each query with the index's own encoder and prints its top-k "
        'passages, one JSON line per query: {"query", "hits": [{"id", "score", '
        '"title", "text"}]}.',
        "examples:\n  keras-ragkd index query kb/ \"What is the capital of France?\"\n"
        "  keras-ragkd index query kb/ \"capital of Peru\" \"currency of Japan\" -k 3",
        index_query,
    )
    query.add_argument("directory", metavar="DIR", help="an index folder")
    query.add_argument("queries", nargs="+", metavar="TEXT", help="query strings")
    query.add_argument("-k", type=int, default=5, metavar="K",
                       help="passages per query (default 5)")

    # train
    train_parser = _parser(
        commands, "train", "train a RAG model on question/answer pairs",
        "Trains a retrieval-augmented question answerer over an index: the "
        "index's encoder embeds the questions (frozen), a copy generator reads "
        "the question with each of its top --num-docs passages and the answers "
        "are marginalised over them (RAG-Token). Saves a relocatable model "
        "folder (config, weights and a copy of the index).",
        "QA format:\n"
        '  JSON Lines: {"question": "What is the capital of France?", "answer": "Paris"}\n'
        "  CSV:        question,answer (header row)\n\n"
        "examples:\n"
        "  keras-ragkd train --index kb/ --data qa.jsonl --out teacher/ --generator base \\\n"
        "      --epochs 20\n"
        "  keras-ragkd train --index kb/ --data qa.csv --out model/ --seconds 600",
        train,
    )
    train_parser.add_argument("--index", required=True, metavar="DIR",
                              help="an index folder from `index build`")
    train_parser.add_argument("--data", required=True, metavar="QA_FILE", help=DATA_HELP)
    train_parser.add_argument("--out", required=True, metavar="MODEL_DIR",
                              help="model folder to create")
    train_parser.add_argument("--generator", default="small", metavar="SIZE",
                              help="generator size: tiny, small (default), base, or minilm "
                              "(a pretrained MiniLM reader)")
    train_parser.add_argument("--num-docs", type=int, default=None, metavar="N",
                              help="passages read per question (default 3)")
    train_parser.add_argument("--passage-length", type=int, default=32, metavar="TOKENS",
                              help="passage tokens the generator reads (default 32)")
    train_parser.add_argument("--answer-length", type=int, default=16, metavar="TOKENS",
                              help="longest answer in tokens, plus one (default 16)")
    _budget_arguments(train_parser, epochs=10, learning_rate=2e-3)

    # distill
    distill_parser = _parser(
        commands, "distill", "distil a trained RAG model into a smaller one",
        "Distils a trained RAG teacher into a smaller RAG student over the same "
        "index: the teacher runs once over the data into a top-k TeacherCache, "
        "then the student learns alpha * (answer loss) + (1 - alpha) * T^2 * "
        "KL(teacher || student) with keras_ragkd.Distiller. The student shares "
        "the teacher's query encoder, vocabulary and index.",
        "examples:\n"
        "  keras-ragkd distill --teacher teacher/ --data qa.jsonl --out student/\n"
        "  keras-ragkd distill --teacher teacher/ --data qa.jsonl --out student/ \\\n"
        "      --student tiny --num-docs 2 --alpha 0.5 --temperature 2 --seconds 300",
        distill,
    )
    distill_parser.add_argument("--teacher", required=True, metavar="MODEL_DIR",
                                help="a model folder from `train`")
    distill_parser.add_argument("--data", required=True, metavar="QA_FILE", help=DATA_HELP)
    distill_parser.add_argument("--out", required=True, metavar="MODEL_DIR",
                                help="student model folder to create")
    distill_parser.add_argument("--student", default="small", metavar="SIZE",
                                help="student generator size (default small)")
    distill_parser.add_argument("--num-docs", type=int, default=None, metavar="N",
                                help="passages the student reads (default: the teacher's)")
    distill_parser.add_argument("--alpha", type=float, default=0.8, metavar="A",
                                help="weight of the answer (hard) loss, in [0, 1] (default 0.8)")
    distill_parser.add_argument("--temperature", type=float, default=1.0, metavar="T",
                                help="softmax temperature of the soft loss (default 1)")
    distill_parser.add_argument("--mask-teacher-errors", action=argparse.BooleanOptionalAction,
                                default=True,
                                help="leave tokens the teacher gets wrong out of the soft "
                                "loss (default on)")
    _budget_arguments(distill_parser, epochs=10, learning_rate=2e-3)

    # evaluate
    evaluate_parser = _parser(
        commands, "evaluate", "exact match and token F1 on question/answer pairs (JSON)",
        "Answers every question and prints SQuAD-style exact match and token F1 "
        'as JSON: {"exact_match", "token_f1", "count", ...}.',
        "examples:\n  keras-ragkd evaluate student/ test_qa.jsonl\n"
        "  keras-ragkd evaluate student/ test_qa.csv --index updated_kb/",
        evaluate,
    )
    evaluate_parser.add_argument("model", metavar="MODEL_DIR", help="a model folder")
    evaluate_parser.add_argument("data", metavar="QA_FILE", help=DATA_HELP)
    _answer_arguments(evaluate_parser)
    evaluate_parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                                 help="questions per generation call (default 64)")

    # ask
    ask_parser = _parser(
        commands, "ask", "answer questions (JSON lines)",
        "Answers questions with a model folder or an exported SavedModel, one "
        'JSON line per question: {"question", "answer"}, plus "passages" '
        "(id, text, P(z|x)) with --show-passages.",
        "examples:\n  keras-ragkd ask student/ \"What is the capital of France?\"\n"
        "  keras-ragkd ask student_savedmodel/ \"What is the capital of France?\" --show-passages\n"
        "  keras-ragkd ask student/ \"What is the capital of France?\" --index updated_kb/",
        ask,
    )
    ask_parser.add_argument("model", metavar="MODEL_DIR|SAVEDMODEL_DIR",
                            help="a model folder or an exported SavedModel")
    ask_parser.add_argument("questions", nargs="+", metavar="QUESTION")
    ask_parser.add_argument("--show-passages", action="store_true",
                            help="also print the retrieved passages and P(z|x)")
    _answer_arguments(ask_parser)

    # export
    export_parser = _parser(
        commands, "export", "export a model as a TensorFlow SavedModel",
        "Writes a SavedModel that answers raw strings with retrieval in the "
        "graph (no Python, no FAISS): `serve` (questions tf.string[None] -> "
        "answers, passage_ids, passage_probabilities) and `retrieve`. Load it "
        "with `import tensorflow_text; tf.saved_model.load(OUT_DIR)`.",
        "examples:\n  keras-ragkd export student/ student_savedmodel/\n"
        "  keras-ragkd export student/ exported/ --num-beams 4 --overwrite",
        export,
    )
    export_parser.add_argument("model", metavar="MODEL_DIR", help="a model folder")
    export_parser.add_argument("out_dir", metavar="OUT_DIR", help="SavedModel folder to create")
    _answer_arguments(export_parser)
    export_parser.add_argument("--exact-retrieval", action="store_true",
                               help="export a model over an approximate index (HNSW, IVF, "
                               "PQ): the export searches exactly, so it may retrieve "
                               "other passages than FAISS")
    export_parser.add_argument("--overwrite", action="store_true",
                               help="replace OUT_DIR if it exists")

    # demo
    demo_parser = _parser(
        commands, "demo", "the countryinfo demo (keras-ragkd demo --help)",
        "Runs the end-to-end demo on the embedded countryinfo knowledge base; "
        "arguments are passed on (see `keras-ragkd demo --help`).",
        None,
        demo,
    )
    demo_parser.add_argument("demo_args", nargs="*", metavar="ARGS",
                             help="the demo's own arguments")

    # Aliases of the first version (not listed in the help).
    legacy_build = commands.add_parser("build-index")
    legacy_build.add_argument("directory")
    legacy_build.add_argument("--index-factory", default="Flat")
    legacy_build.add_argument("--countries", nargs="*", default=None)
    legacy_build.add_argument("--sequence-length", type=int, default=64)
    legacy_build.add_argument("--verbose", type=int, default=1)
    legacy_build.set_defaults(run=build_index_legacy)
    legacy_search = commands.add_parser("search")
    legacy_search.add_argument("directory")
    legacy_search.add_argument("queries", nargs="+")
    legacy_search.add_argument("-k", type=int, default=5)
    legacy_search.set_defaults(run=index_query)
    commands._choices_actions = [
        action for action in commands._choices_actions
        if action.dest not in ("build-index", "search")
    ]
    return parser


def _answer_arguments(parser):
    parser.add_argument("--index", metavar="DIR", default=None,
                        help="answer from another index folder (built with the model's "
                        "encoder) instead of the model's own")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N",
                        help="beam search width (default 1: greedy)")


def _version():
    try:
        from importlib.metadata import version

        return f"{PROG} {version('keras_ragkd')}"
    except Exception:  # noqa: BLE001 (not installed: a source checkout)
        return f"{PROG} (source)"


def main(argv=None):
    """Runs the command line; returns the exit status.

    Example:

    >>> main(["index", "info", "/no/such/folder"])  # One line on stderr.
    2
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = make_parser()
    if argv and argv[0] == "demo":
        # The demo parses its own arguments, `--help` included.
        args = argparse.Namespace(command="demo", run=demo, demo_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if getattr(args, "epochs", None) is None and hasattr(args, "default_epochs"):
        if args.seconds is None:
            args.epochs = args.default_epochs
    args.stdout = sys.stdout
    try:
        # Progress bars (Keras prints them to stdout) go to stderr, so that
        # stdout carries only the results.
        with contextlib.redirect_stdout(sys.stderr):
            return args.run(args) or 0
    except BadInput as error:
        message = " ".join(str(error).split())
        print(f"{PROG} {_command_of(args)}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _command_of(args):
    if args.command == "index":
        return f"index {args.index_command}"
    return args.command


if __name__ == "__main__":
    sys.exit(main())
