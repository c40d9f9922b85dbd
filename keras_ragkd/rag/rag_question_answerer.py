"""`RagQuestionAnswerer`: a RAG task model on raw question strings."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.rag.copy_generator import CopyTransformerGenerator
from keras_ragkd.rag.losses import RagSequenceLoss
from keras_ragkd.rag.minilm_reader import MiniLMReader
from keras_ragkd.rag.losses import RagTokenLoss
from keras_ragkd.rag.preprocessor import END_ID
from keras_ragkd.rag.preprocessor import START_ID
from keras_ragkd.rag.retrieval_augmented_generator import RetrievalAugmentedGenerator
from keras_ragkd.retrieval import PassageRetriever


def make_passage_retriever(index, preprocessor, k, backend="faiss"):
    """A `PassageRetriever` over `index` carrying the preprocessor's passage ids.

    Args:
        index: a `PassageIndex`.
        preprocessor: the `RagPreprocessor` that tokenises the passages.
        k: int, passages per query.
        backend: `"faiss"` or `"tensor"`.
    """
    token_ids = preprocessor.tokenize_passages([p.text for p in index.passages])
    return PassageRetriever(index, k=k, backend=backend, passage_token_ids=token_ids)


def _as_string_array(values, name):
    if isinstance(values, str):
        values = [values]
    array = np.asarray(values, dtype=object)
    if array.ndim != 1 or not all(isinstance(v, (str, bytes)) for v in array):
        raise TypeError(
            f"`{name}` must be a list of strings. Received: {name}={values!r:.200}"
        )
    return array.astype(str)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RagQuestionAnswerer(keras.Model):
    """Question answering with retrieval-augmented generation, on raw strings.

    A keras-hub style task: a `RagPreprocessor` (tokenisation in `tf.data`)
    plus a `RetrievalAugmentedGenerator` layer. `fit`/`evaluate` take
    `(question, answer)` strings (or a `tf.data.Dataset` of string pairs),
    `generate` returns answer strings (greedy or beam search, RAG-Token or
    RAG-Sequence decoding), `retrieve` shows the passages and `P(z|x)`, and
    `with_index` swaps the knowledge base without retraining.

    `call` takes preprocessed inputs (`preprocessor(questions, answers)[0]`),
    so the model can also be the teacher or student of a `Distiller`.

    Args:
        preprocessor: a `RagPreprocessor`.
        rag: a `RetrievalAugmentedGenerator` whose generator uses the
            preprocessor's reduced vocabulary.
        **kwargs: `keras.Model` arguments.

    Example:

    >>> model = RagQuestionAnswerer(preprocessor, rag)  # doctest: +SKIP
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))  # doctest: +SKIP
    >>> model.fit(questions, answers, batch_size=32, epochs=1)  # doctest: +SKIP
    >>> model.generate(["What is the capital of France?"])  # doctest: +SKIP
    ['paris']
    """

    def __init__(self, preprocessor, rag, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rag, RetrievalAugmentedGenerator):
            raise TypeError(
                "`rag` must be a `RetrievalAugmentedGenerator`. "
                f"Received: rag={rag!r}"
            )
        self.preprocessor = preprocessor
        self.rag = rag
        self.built = True
        self._generate_functions = {}

    def call(self, inputs, training=None):
        return self.rag(inputs, training=training)

    def compile(self, optimizer="adam", loss="auto", **kwargs):
        """Like `keras.Model.compile`; `loss="auto"` picks the RAG loss.

        `"auto"` is `RagTokenLoss()` for `marginalization="token"` and
        `RagSequenceLoss(normalize_by_length=True)` for `"sequence"`.
        """
        if loss == "auto":
            if self.rag.marginalization == "token":
                loss = RagTokenLoss()
            else:
                loss = RagSequenceLoss(normalize_by_length=True)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # Data.

    def preprocess(self, questions, answers=None, batch_size=32, shuffle=False, seed=None):
        """A batched `tf.data.Dataset` of preprocessed model inputs.

        Args:
            questions: list of strings.
            answers: optional list of strings (then elements are `(x, y)`).
            batch_size: int.
            shuffle: bool, shuffle the pairs each epoch.
            seed: optional int, shuffle seed.
        """
        questions = _as_string_array(questions, "questions")
        if answers is None:
            dataset = tf.data.Dataset.from_tensor_slices(questions)
        else:
            answers = _as_string_array(answers, "answers")
            if len(answers) != len(questions):
                raise ValueError(
                    "Expected one answer per question. Received: "
                    f"len(questions)={len(questions)}, len(answers)={len(answers)}"
                )
            dataset = tf.data.Dataset.from_tensor_slices((questions, answers))
        if shuffle:
            dataset = dataset.shuffle(len(questions), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
        return dataset.map(self.preprocessor, num_parallel_calls=1).prefetch(2)

    def _as_dataset(self, x, y, batch_size, shuffle):
        if isinstance(x, tf.data.Dataset):
            if y is not None:
                raise ValueError(
                    "Pass the answers inside the dataset of (question, answer) "
                    f"string pairs, not as `y`. Received: y={y!r:.80}"
                )
            spec = x.element_spec
            first = spec[0] if isinstance(spec, tuple) else spec
            if isinstance(first, dict):
                return x  # Already preprocessed, e.g. by `preprocess`.
            return x.map(self.preprocessor, num_parallel_calls=1)
        return self.preprocess(x, y, batch_size=batch_size or 32, shuffle=shuffle)

    def fit(self, x=None, y=None, batch_size=None, shuffle=True, validation_data=None, **kwargs):
        """Trains on question/answer strings.

        `x` is a list of questions with answers `y`, a batched
        `tf.data.Dataset` of `(question, answer)` string pairs, or a dataset
        already preprocessed (as returned by `preprocess`). `shuffle` applies
        to lists. Other arguments are those of `keras.Model.fit`.
        """
        dataset = self._as_dataset(x, y, batch_size, shuffle)
        if isinstance(validation_data, tuple):
            validation_data = self._as_dataset(*validation_data, batch_size, False)
        elif validation_data is not None:
            validation_data = self._as_dataset(validation_data, None, batch_size, False)
        return super().fit(dataset, validation_data=validation_data, shuffle=False, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Evaluates the loss on question/answer strings."""
        return super().evaluate(self._as_dataset(x, y, batch_size, False), **kwargs)

    # Generation and inspection.

    def _question_batches(self, questions, batch_size):
        """Preprocessed question batches (no `tf.data` pipeline: low latency)."""
        questions = _as_string_array(questions, "questions")
        for start in range(0, len(questions), batch_size):
            yield self.preprocessor(tf.constant(questions[start : start + batch_size]))

    def _generate_function(self, max_length, num_beams, marginalization):
        key = (max_length, num_beams, marginalization)
        if key not in self._generate_functions:
            vocabulary_size = self.preprocessor.vocabulary_size

            @tf.autograph.experimental.do_not_convert
            def generate(inputs):
                # The first decoding step attends over one position, which
                # makes Keras warn about a softmax over a size-1 axis.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="You are using a softmax")
                    return self.rag.generate_token_ids(
                        inputs,
                        start_id=START_ID,
                        end_id=END_ID,
                        max_length=max_length,
                        num_beams=num_beams,
                        vocabulary_size=vocabulary_size,
                        marginalization=marginalization,
                    )

            self._generate_functions[key] = tf.function(generate, reduce_retracing=True)
        return self._generate_functions[key]

    def generate(self, questions, max_length=None, num_beams=1, marginalization=None,
                 batch_size=64):
        """Answers questions.

        Args:
            questions: a string or list of strings.
            max_length: int, answer tokens (defaults to the preprocessor's
                `answer_length`).
            num_beams: int, 1 for greedy search.
            marginalization: `"token"` (RAG-Token decoding), `"sequence"`
                (RAG-Sequence thorough decoding) or `None` for the model's.
            batch_size: int, questions per compiled call.

        Returns:
            A list of answer strings.
        """
        max_length = max_length or self.preprocessor.answer_length
        function = self._generate_function(max_length, num_beams, marginalization)
        answers = []
        for inputs in self._question_batches(questions, batch_size):
            token_ids, _ = function(inputs)
            answers.extend(self.preprocessor.detokenize(token_ids).tolist())
        return answers

    def retrieve(self, questions, batch_size=64):
        """The passages each question retrieves, with `P(z|x)`.

        Returns:
            One list per question of dicts `{"id", "title", "text",
            "probability", "score"}` (invalid retrievals left out).
        """
        passages = self.rag.retriever.index.passages
        results = []
        for inputs in self._question_batches(questions, batch_size):
            retrieved = self.rag.retrieve(inputs, training=False)
            rows = retrieved["rows"].numpy()
            mask = retrieved["mask"].numpy()
            probabilities = np.exp(retrieved["doc_log_probs"].numpy())
            scores = retrieved["doc_scores"].numpy()
            for b in range(rows.shape[0]):
                results.append(
                    [
                        dict(
                            passages[rows[b, z]].to_dict(),
                            probability=float(probabilities[b, z]),
                            score=float(scores[b, z]),
                        )
                        for z in range(rows.shape[1])
                        if mask[b, z]
                    ]
                )
        return results

    def with_index(self, index, backend=None, n_docs=None):
        """A model answering from another knowledge base, sharing the weights.

        The query encoder, generator and preprocessor are the same objects
        (nothing is retrained); the retriever is new, and so is the RAG layer,
        which starts from a copy of the current passage-posterior scale. With
        `n_docs` the model reads another number of passages per question,
        e.g. a teacher read through its student's top passages, so that the
        marginal it is distilled from mixes only passages the student sees.

        Args:
            index: a `PassageIndex` embedded by the same encoder family.
            backend: retriever backend; defaults to the current one.
            n_docs: passages per question; defaults to the current number.
        """
        old = self.rag.retriever
        n_docs = self.rag.n_docs if n_docs is None else n_docs
        depth = old.k
        if isinstance(n_docs, int) and n_docs > depth:
            depth = n_docs  # Other values are checked by the layer.
        retriever = make_passage_retriever(
            index, self.preprocessor, depth, backend=backend or old.backend
        )
        rag = RetrievalAugmentedGenerator(
            self.rag.query_encoder,
            retriever,
            self.rag.generator,
            n_docs=n_docs,
            marginalization=self.rag.marginalization,
            doc_score_scale=self.rag.initial_doc_score_scale,
            train_doc_score_scale=self.rag.train_doc_score_scale,
            copy_from_question=self.rag.copy_from_question,
            padding_id=self.rag.padding_id,
        )
        rag.log_doc_score_scale.assign(self.rag.log_doc_score_scale)
        return RagQuestionAnswerer(self.preprocessor, rag)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "rag": keras.saving.serialize_keras_object(self.rag),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        config["rag"] = keras.saving.deserialize_keras_object(config["rag"])
        return cls(**config)


GENERATOR_SIZES = {
    "tiny": dict(hidden_dim=32, num_encoder_layers=1, num_decoder_layers=1,
                 num_heads=2, intermediate_dim=64),
    "small": dict(hidden_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                  num_heads=2, intermediate_dim=128),
    "base": dict(hidden_dim=128, num_encoder_layers=3, num_decoder_layers=2,
                 num_heads=4, intermediate_dim=512),
    # The pretrained all-MiniLM-L6-v2 backbone (frozen) reads the source.
    "minilm": dict(source_encoder="minilm", hidden_dim=256, num_encoder_layers=1,
                   num_decoder_layers=2, num_heads=4, intermediate_dim=512),
}


def build_generator(generator, preprocessor, dropout=0.1):
    """A `CopyTransformerGenerator` over the preprocessor's vocabulary.

    Args:
        generator: a size name from `GENERATOR_SIZES`, a dict of
            `CopyTransformerGenerator` arguments (`source_encoder="minilm"`
            builds a `MiniLMReader` on the preprocessor's vocabulary, with
            its `fine_tune_layers` from the dict's `"reader_fine_tune_layers"`,
            default 0), or a generator layer (returned as is).
        preprocessor: the `RagPreprocessor` whose ids the generator reads.
        dropout: generator dropout (for size names and dicts).

    Example:

    >>> build_generator("tiny", preprocessor).vocabulary_size  # doctest: +SKIP
    """
    if isinstance(generator, str):
        if generator not in GENERATOR_SIZES:
            raise ValueError(
                f"`generator` must be one of {sorted(GENERATOR_SIZES)}, a dict "
                f"or a layer. Received: generator={generator!r}"
            )
        generator = GENERATOR_SIZES[generator]
    if isinstance(generator, dict):
        generator = dict(generator)
        fine_tune_layers = generator.pop("reader_fine_tune_layers", 0)
        if generator.get("source_encoder") == "minilm":
            generator["source_encoder"] = MiniLMReader(
                preprocessor.vocabulary_ids, fine_tune_layers=fine_tune_layers
            )
        elif fine_tune_layers:
            raise ValueError(
                '`"reader_fine_tune_layers"` applies to `source_encoder="minilm"` '
                "generators only. Received: "
                f"source_encoder={generator.get('source_encoder')!r}"
            )
        generator = CopyTransformerGenerator(
            preprocessor.vocabulary_size,
            max_sequence_length=max(
                preprocessor.question_length + preprocessor.passage_length,
                preprocessor.answer_length,
            ),
            **dict({"dropout": dropout}, **generator),
        )
    return generator


def build_rag_question_answerer(index, query_encoder, preprocessor, generator="small",
                                n_docs=3, k=None, marginalization="token",
                                backend="faiss", doc_score_scale=10.0, dropout=0.1):
    """Builds a `RagQuestionAnswerer` over an index in one call.

    Args:
        index: a `PassageIndex` (embedded by `query_encoder`'s family).
        query_encoder: Keras model, the preprocessor's `"query"` (raw strings
            or token ids) → `(batch, index.dim)`.
        preprocessor: a `RagPreprocessor`; models that share one share the
            output vocabulary (as a distillation teacher and student must).
        generator: a size name from `GENERATOR_SIZES` (`"tiny"`, `"small"`,
            `"base"`, or `"minilm"`: a frozen pretrained MiniLM reader under
            a trained copy decoder), a dict of `CopyTransformerGenerator`
            arguments (`source_encoder="minilm"` builds a `MiniLMReader` on
            the preprocessor's vocabulary; `"reader_fine_tune_layers": n`
            trains its top `n` layers), or a generator layer.
        n_docs: passages per question.
        k: retriever depth (defaults to `n_docs`).
        marginalization: `"token"` or `"sequence"`.
        backend: `"faiss"` or `"tensor"`.
        doc_score_scale: initial multiplier of the scores in `P(z|x)`.
        dropout: generator dropout (for size names and dicts).

    Example:

    >>> preprocessor = RagPreprocessor.from_texts(tokenizer, texts)  # doctest: +SKIP
    >>> model = build_rag_question_answerer(index, encoder, preprocessor,
    ...                                     generator="small")  # doctest: +SKIP
    """
    generator = build_generator(generator, preprocessor, dropout)
    retriever = make_passage_retriever(index, preprocessor, k or n_docs, backend)
    rag = RetrievalAugmentedGenerator(
        query_encoder,
        retriever,
        generator,
        n_docs=n_docs,
        marginalization=marginalization,
        doc_score_scale=doc_score_scale,
    )
    return RagQuestionAnswerer(preprocessor, rag)
