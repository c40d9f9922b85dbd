"""`RagQuestionAnswerer`: a RAG task model on raw question strings."""

import types

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.distribute import MultiWorkerFitMixin
from keras_ragkd.pipelines import is_raw_text
from keras_ragkd.pipelines import preprocessed_dataset
from keras_ragkd.rag.copy_generator import CopyTransformerGenerator
from keras_ragkd.rag.exporting import export_question_answerer
from keras_ragkd.rag.losses import RagSequenceLoss
from keras_ragkd.rag.losses import RagTokenLoss
from keras_ragkd.rag.minilm_reader import MiniLMReader
from keras_ragkd.rag.passage_tokens import PassageTokenTable
from keras_ragkd.rag.preprocessor import RagPreprocessor
from keras_ragkd.rag.presets import load_rag_preset
from keras_ragkd.rag.presets import save_rag_preset
from keras_ragkd.rag.retrieval_augmented_generator import RetrievalAugmentedGenerator
from keras_ragkd.retrieval import HybridQueryEncoder
from keras_ragkd.retrieval import HybridRetriever
from keras_ragkd.retrieval import PassageReindexer
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval.passage import passage_text
from keras_ragkd.validation import check_number
from keras_ragkd.retrieval.encoder_records import check_query_encoder
from keras_ragkd.retrieval.encoder_records import keras_query_encoder


def _as_string_array(values, name):
    if isinstance(values, str):
        values = [values]
    array = np.asarray(values, dtype=object)
    if array.ndim != 1 or not all(isinstance(v, (str, bytes)) for v in array):
        raise TypeError(
            f"`{name}` must be a list of strings. Received: {name}={values!r:.200}"
        )
    return array.astype(str)


def _as_raw_inputs(x, y):
    """Validated `(questions, answers)` string arrays, or a dataset untouched."""
    if isinstance(x, tf.data.Dataset):
        return x, y
    if isinstance(x, tuple) and len(x) == 2 and y is None:
        x, y = x
    questions = _as_string_array(x, "questions")
    if y is None:
        return questions, None
    answers = _as_string_array(y, "answers")
    if len(answers) != len(questions):
        raise ValueError(
            "Expected one answer per question. Received: "
            f"len(questions)={len(questions)}, len(answers)={len(answers)}"
        )
    return questions, answers


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RagQuestionAnswerer(MultiWorkerFitMixin, keras.Model):
    """Question answering with retrieval-augmented generation, on raw strings.

    A task in keras-hub's shape: a preprocessor (`RagPreprocessor`,
    tokenisation in `tf.data`) plus a `RetrievalAugmentedGenerator` layer.
    `fit`/`evaluate`/`predict` take `(question, answer)` strings (or a
    `tf.data.Dataset` of string pairs) and map `preprocess_samples` over
    them, as keras-hub's `Task` does;
    `generate` returns answer strings from one compiled function (tokenising,
    retrieving, decoding with greedy or beam search, RAG-Token or RAG-Sequence,
    and detokenising, all in the graph); `export` writes that function as a
    SavedModel that answers raw strings without this package; `retrieve`
    shows the passages and `P(z|x)`; `with_index` swaps the knowledge base
    without retraining; `save_to_preset`/`from_preset` keep a relocatable
    model folder (config, weights and the index).

    `call` takes preprocessed inputs (`preprocessor(questions, answers)[0]`),
    so the model can also be the teacher or student of a `Distiller` (which
    applies the student's preprocessor to raw strings too).

    It is not a subclass of `keras_hub.models.Task`: keras-hub tasks must
    be functional models. Building a functional instance of a `keras.Model`
    subclass rewrites that class's bases for good (the open Keras bug
    keras-team/keras#17270), so a subclassed task and the functional ones in
    the same process, such as MiniLM's `BertTextEmbedder`, break each other.
    Nor can this task be functional: the RAG layer's inputs have no fixed
    signature (the question string for a text query encoder, token ids for
    another, retrieved rows when retrieval runs in the input pipeline).

    Args:
        preprocessor: a `QuestionAnswerPreprocessor` (e.g. `RagPreprocessor`).
        rag: a `RetrievalAugmentedGenerator` whose generator uses the
            preprocessor's vocabulary.
        **kwargs: `keras.Model` arguments.

    Example:

    >>> import keras
    >>> from keras_ragkd.data.countries import country_passages, country_questions
    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder, TfidfQueryEncoder
    >>> from keras_ragkd.rag import RagPreprocessor
    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> countries = ["France", "Peru", "Japan"]
    >>> passages = country_passages(countries)
    >>> qa = [q for q in country_questions("all") if q["country"] in countries]
    >>> tfidf = TfidfEncoder(dim=8).fit([p["text"] for p in passages])
    >>> index = PassageIndex.build(passages, tfidf, verbose=0)
    >>> texts = [p["text"] for p in passages]
    >>> texts += [q[key] for q in qa for key in ("question", "answer")]
    >>> preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
    >>> keras.utils.set_random_seed(0)
    >>> model = build_rag_question_answerer(
    ...     index, TfidfQueryEncoder.from_encoder(tfidf), preprocessor,
    ...     generator="tiny", num_docs=2)
    >>> model.compile(optimizer=keras.optimizers.Adam(5e-3))
    >>> history = model.fit([q["question"] for q in qa], [q["answer"] for q in qa],
    ...                     batch_size=8, epochs=20, verbose=0)
    >>> model.generate(["What is the capital of Peru?"])
    ['lima']
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
        self.query_encoder_optimizer = None
        self.built = True
        # A plain object: Keras would track a dict attribute, and a SavedModel
        # cannot hold functions keyed by tuples.
        self._functions = types.SimpleNamespace(by_key={})

    def __call__(self, *args, **kwargs):
        # As keras-hub tasks do, refuse raw strings; the preprocessed inputs
        # may hold the question string for the query encoder.
        inputs = args[0] if args else kwargs.get("inputs")
        if is_raw_text(inputs):
            raise ValueError(
                "Calling the model does not preprocess; pass raw strings to "
                "`predict`, `fit`, `evaluate` or `generate`, or call the model "
                "on `model.preprocessor(questions)`. "
                f"Received: inputs={inputs!r:.120}"
            )
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None):
        return self.rag(inputs, training=training)

    @property
    def output_kind(self):
        """`"log_probabilities"`: `call` returns RAG marginals, read so by the `Distiller`."""
        return "log_probabilities"

    def compile(self, optimizer="adam", loss="auto", query_encoder_optimizer="auto", **kwargs):
        """Like `keras.Model.compile`; `loss="auto"` picks the RAG loss.

        `"auto"` is `RagTokenLoss` for `marginalization="token"` and
        `RagSequenceLoss(normalize_by_length=True)` for `"sequence"`, both
        ignoring the preprocessor's padding id.

        A trainable query encoder (`build_rag_question_answerer(...,
        train_query_encoder=True)`) gets its own optimizer, so that it moves
        more slowly than the generator: with `query_encoder_optimizer="auto"`
        a copy of `optimizer` at a tenth of its learning rate
        (`QUERY_ENCODER_LEARNING_RATE_FACTOR`). Pass an optimizer (or its
        name) to choose, or `None` for one optimizer over every weight. A
        frozen query encoder needs none. `fit` then also keeps the index in
        step with the encoder (see `fit`).

        Args:
            optimizer: the optimizer (or name) of the model's weights.
            loss: `"auto"` or a Keras loss.
            query_encoder_optimizer: `"auto"`, `None`, or an optimizer (or
                name) for the query encoder's trainable weights.
            **kwargs: other `keras.Model.compile` arguments.
        """
        if loss == "auto":
            padding_id = self.preprocessor.padding_id
            if self.rag.marginalization == "token":
                loss = RagTokenLoss(padding_id=padding_id)
            else:
                loss = RagSequenceLoss(padding_id=padding_id, normalize_by_length=True)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self.query_encoder_optimizer = query_encoder_optimizer_for(
            self.optimizer, query_encoder_optimizer, self.rag.query_encoder
        )

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["query_encoder_optimizer"] = keras.saving.serialize_keras_object(
                self.query_encoder_optimizer
            )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self._weights_for_main_optimizer())
            if self.query_encoder_optimizer is not None:
                self.query_encoder_optimizer.build(self.rag.query_encoder.trainable_variables)

    def _weights_for_main_optimizer(self):
        if self.query_encoder_optimizer is None:
            return self.trainable_variables
        encoder_weights = {id(v) for v in self.rag.query_encoder.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in encoder_weights]

    def train_step(self, data):
        """Keras' step, with the query encoder's own optimizer where it has one."""
        if self.query_encoder_optimizer is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            self._loss_tracker.update_state(
                # Keras scales the loss down by the replica count; the
                # tracked figure is the per-example loss, as in Keras' step.
                loss * tf.distribute.get_strategy().num_replicas_in_sync,
                sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
            )
            loss = self.optimizer.scale_loss(loss)
        encoder_weights = self.rag.query_encoder.trainable_variables
        other_weights = self._weights_for_main_optimizer()
        gradients = tape.gradient(loss, encoder_weights + other_weights)
        self.query_encoder_optimizer.apply(gradients[: len(encoder_weights)], encoder_weights)
        self.optimizer.apply(gradients[len(encoder_weights):], other_weights)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # Data.

    def preprocess_samples(self, x, y=None, sample_weight=None):
        """The preprocessor on one batch of raw strings (keras-hub's hook).

        Questions alone (as `predict` gets them) are given the decoder start
        token, so the model returns `log P(first answer token | x)`.
        """
        if y is not None:
            return self.preprocessor(x, y, sample_weight)
        inputs = self.preprocessor(x)
        batch = tf.shape(inputs["question_token_ids"])[0]
        inputs["decoder_token_ids"] = tf.fill([batch, 1], self.preprocessor.start_id)
        return inputs

    def preprocess(self, questions, answers=None, batch_size=32, shuffle=False, seed=None):
        """A batched `tf.data.Dataset` of preprocessed model inputs.

        Args:
            questions: list of strings, or a batched dataset of question
                strings or `(question, answer)` pairs.
            answers: optional list of strings (then elements are `(x, y)`).
            batch_size: int.
            shuffle: bool, shuffle the pairs each epoch.
            seed: optional int, shuffle seed.
        """
        questions, answers = _as_raw_inputs(questions, answers)
        return preprocessed_dataset(
            self.preprocess_samples, questions, answers, batch_size=batch_size,
            shuffle=shuffle, seed=seed,
        )

    def fit(self, x=None, y=None, batch_size=None, shuffle=True, validation_data=None, **kwargs):
        """Trains on question/answer strings.

        `x` is a list of questions with answers `y`, a batched
        `tf.data.Dataset` of `(question, answer)` string pairs, or a dataset
        already preprocessed (as returned by `preprocess`). `shuffle` applies
        to lists. Other arguments are those of `keras.Model.fit`.

        With a trainable query encoder on raw strings, the index follows the
        encoder: unless `callbacks` hold a `PassageReindexer` already, one is
        added that re-embeds the passages at the end of every epoch.
        """
        kwargs["callbacks"] = self._with_reindexer(kwargs.get("callbacks"))
        dataset = self.preprocess(x, y, batch_size=batch_size, shuffle=shuffle)
        if validation_data is not None:
            if not isinstance(validation_data, tuple):
                validation_data = (validation_data, None)
            validation_data = self.preprocess(*validation_data, batch_size=batch_size)
        return super().fit(dataset, validation_data=validation_data, shuffle=False, **kwargs)

    def _with_reindexer(self, callbacks):
        callbacks = list(callbacks or [])
        retriever = self.rag.retriever
        if (
            self.rag.query_encoder.trainable_variables
            and self.preprocessor.query_as_text
            and isinstance(retriever, PassageRetriever)
            and not any(isinstance(c, PassageReindexer) for c in callbacks)
        ):
            callbacks.append(PassageReindexer(retriever, self.rag.query_encoder))
        return callbacks

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Evaluates the loss on question/answer strings."""
        return super().evaluate(self.preprocess(x, y, batch_size=batch_size), **kwargs)

    def predict(self, x=None, batch_size=None, **kwargs):
        """Output log-probabilities for raw strings.

        `x` is a list of questions (outputs are `log P(first answer token|x)`,
        `(batch, 1, vocab)` for RAG-Token), a `(questions, answers)` tuple of
        string lists (teacher-forced outputs over the answers), or a dataset.
        """
        return super().predict(self.preprocess(x, batch_size=batch_size), **kwargs)

    # Generation and inspection.

    def _question_batches(self, questions, batch_size):
        questions = _as_string_array(questions, "questions")
        for start in range(0, len(questions), batch_size):
            yield tf.constant(questions[start : start + batch_size])

    def answer_function(self, max_length=None, num_beams=1, marginalization=None,
                        **decode_options):
        """A compiled `tf.function` from question strings to answers.

        One graph: `generate_preprocess`, retrieval, the decoding loop and
        `generate_postprocess`. `generate` calls it and `export` saves it.

        Args:
            max_length: int, answer tokens (defaults to the preprocessor's
                `answer_length`).
            num_beams: int, 1 for greedy search.
            marginalization: `"token"`, `"sequence"` or `None` for the model's.
            **decode_options: other arguments of the RAG layer's
                `decode_context` (e.g. `use_cache`).

        Returns:
            A `tf.function` taking `tf.string` `(batch,)` and returning a dict
            `{"answers": tf.string (batch,), "passage_ids": tf.string
            (batch, num_docs), "passage_probabilities": float32 (batch, num_docs)}`.
        """
        preprocessor = self.preprocessor
        max_length = max_length or preprocessor.answer_length

        def answer(questions):
            inputs = preprocessor.generate_preprocess(questions)
            context = self.rag.encode_context(inputs, training=False)
            token_ids, _ = self.rag.decode_context(
                context,
                start_id=preprocessor.start_id,
                end_id=preprocessor.end_id,
                max_length=max_length,
                num_beams=num_beams,
                vocabulary_size=preprocessor.vocabulary_size,
                marginalization=marginalization,
                **decode_options,
            )
            outputs = self._passages_of(context["retrieved"])
            outputs["answers"] = preprocessor.generate_postprocess(token_ids)
            return outputs

        return tf.function(answer, input_signature=[tf.TensorSpec([None], tf.string)])

    def retrieve_function(self):
        """A compiled `tf.function` from question strings to passages.

        Returns:
            A `tf.function` taking `tf.string` `(batch,)` and returning a dict
            `{"passage_ids", "passage_texts"` (tf.string `(batch, num_docs)`, `""`
            where nothing was found) `, "passage_probabilities"` (`P(z|x)`)
            `, "passage_scores"}` (float32 `(batch, num_docs)`).
        """
        texts = tf.constant([p.text for p in self.rag.retriever.index.passages])

        def retrieve(questions):
            retrieved = self.rag.retrieve(self.preprocessor(questions), training=False)
            outputs = self._passages_of(retrieved)
            outputs["passage_texts"] = _gather_strings(texts, retrieved)
            outputs["passage_scores"] = tf.where(retrieved["mask"], retrieved["doc_scores"], 0.0)
            return outputs

        return tf.function(retrieve, input_signature=[tf.TensorSpec([None], tf.string)])

    def _compiled(self, name, *args, **kwargs):
        """`name(*args, **kwargs)` (a function factory) cached per retriever backend."""
        if self.rag.retriever is None:
            raise ValueError(
                "This model reads passages its input pipeline retrieved "
                "(`with_retrieved_passages`); to generate or export, give it a "
                "retriever first: `model.with_index(index)`. Received: retriever=None"
            )
        key = (name, args, tuple(sorted(kwargs.items())), self.rag.retriever.backend)
        if key not in self._functions.by_key:
            self._functions.by_key[key] = getattr(self, name)(*args, **kwargs)
        return self._functions.by_key[key]

    def _passages_of(self, retrieved):
        ids = tf.constant([p.id for p in self.rag.retriever.index.passages])
        return {
            "passage_ids": _gather_strings(ids, retrieved),
            "passage_probabilities": tf.where(
                retrieved["mask"], tf.exp(retrieved["doc_log_probs"]), 0.0
            ),
        }

    def generate(self, questions, max_length=None, num_beams=1, marginalization=None,
                 batch_size=64, **decode_options):
        """Answers questions.

        Args:
            questions: a string or list of strings.
            max_length: int, answer tokens (defaults to the preprocessor's
                `answer_length`).
            num_beams: int, 1 for greedy search.
            marginalization: `"token"` (RAG-Token decoding), `"sequence"`
                (RAG-Sequence thorough decoding) or `None` for the model's.
            batch_size: int, questions per compiled call.
            **decode_options: other arguments of the RAG layer's
                `decode_context`: `use_cache=False` decodes greedy RAG-Token
                answers without the generator's key/value cache.

        Returns:
            A list of answer strings.
        """
        function = self._compiled(
            "answer_function", max_length, num_beams, marginalization, **decode_options
        )
        answers = []
        for batch in self._question_batches(questions, batch_size):
            # An undertrained model can end on part of a multi-byte character.
            texts = function(batch)["answers"].numpy()
            answers.extend(text.decode("utf-8", errors="replace") for text in texts)
        return answers

    def retrieve(self, questions, batch_size=64):
        """The passages each question retrieves, with `P(z|x)`.

        Returns:
            One list per question of dicts `{"id", "title", "text",
            "probability", "score"}` (invalid retrievals left out).
        """
        index = self.rag.retriever.index
        function = self._compiled("retrieve_function")
        results = []
        for batch in self._question_batches(questions, batch_size):
            outputs = {key: value.numpy() for key, value in function(batch).items()}
            for ids, probabilities, scores in zip(
                outputs["passage_ids"], outputs["passage_probabilities"],
                outputs["passage_scores"],
            ):
                results.append(
                    [
                        dict(index.get(passage_id.decode()).to_dict(),
                             probability=float(probability), score=float(score))
                        for passage_id, probability, score in zip(ids, probabilities, scores)
                        if passage_id
                    ]
                )
        return results

    def export(self, filepath, format="tf_saved_model", max_length=None, num_beams=1,
               marginalization=None, verbose=False, exact_retrieval=False, **kwargs):
        """Writes a SavedModel that answers raw question strings.

        Signatures: `serve` (questions `tf.string[None]` → `answers`,
        `passage_ids`, `passage_probabilities`) and `retrieve` (→
        `passage_ids`, `passage_texts`, `passage_probabilities`,
        `passage_scores`). Retrieval is in the graph (the index's vectors and
        passage tokens are variables of the artifact), so it loads with
        `tf.saved_model.load` after `import tensorflow_text`, without this
        package. See `keras_ragkd.serving.export_model`.

        Args:
            filepath: the SavedModel folder (replaced atomically).
            format: `"tf_saved_model"` (the only format).
            max_length, num_beams, marginalization: decoding settings of
                `serve`, as for `generate`.
            verbose: bool, print the endpoints.
            exact_retrieval: bool. The export searches exactly; for an
                approximate index (e.g. HNSW) this differs from in-process
                FAISS search, so it is refused unless this is True.
        """
        if format != "tf_saved_model":
            raise ValueError(
                "`RagQuestionAnswerer.export` writes TensorFlow SavedModels only. "
                f"Received: format={format!r}"
            )
        if kwargs:
            raise ValueError(
                "`RagQuestionAnswerer.export` takes no other arguments (its signatures "
                f"are fixed: `serve` and `retrieve`). Received: {sorted(kwargs)}"
            )
        return export_question_answerer(
            self, filepath, max_length=max_length, num_beams=num_beams,
            marginalization=marginalization, verbose=verbose,
            exact_retrieval=exact_retrieval,
        )

    def save_to_preset(self, preset_dir):
        """Saves a relocatable model folder: config, weights and the index.

        See `keras_ragkd.rag.presets.save_rag_preset`.
        """
        save_rag_preset(self, preset_dir)

    @classmethod
    def from_preset(cls, preset_dir, backend=None):
        """Loads a folder written by `save_to_preset`, wherever it now lives.

        Args:
            preset_dir: the model folder.
            backend: optional retriever backend (`"faiss"` or `"tensor"`).
        """
        model = load_rag_preset(preset_dir)
        if not isinstance(model, cls):
            raise ValueError(
                f"{preset_dir!r} holds a {type(model).__name__}, not a {cls.__name__}. "
                f"Received: preset_dir={preset_dir!r}"
            )
        if backend is not None:
            model.rag.retriever.set_backend(backend)
        return model

    def with_index(self, index, backend=None, num_docs=None, lexical_weight="same"):
        """A model answering from another knowledge base, sharing the weights.

        The query encoder, generator and preprocessor are the same objects
        (nothing is retrained; a hybrid model's dense encoder is wrapped with
        a TF-IDF vocabulary of the new passages); the retriever and the passage token table
        (the new passages tokenised by the preprocessor) are new, and so is
        the RAG layer, which starts from a copy of the current
        passage-posterior scale. With `num_docs` the model reads another
        number of passages per question, e.g. a teacher read through its
        student's top passages, so that the marginal it is distilled from
        mixes only passages the student sees.

        Args:
            index: a `PassageIndex` embedded by the same encoder family.
            backend: retriever backend; defaults to the current one.
            num_docs: passages per question; defaults to the current number.
            lexical_weight: `"same"` (retrieve as now: dense, or hybrid with
                the current fusion), `None` (dense) or a float (hybrid
                retrieval with this weight, see `build_query_retriever`).
        """
        old = self.rag.retriever  # None for a model fed candidates by its input pipeline.
        num_docs = self.rag.num_docs if num_docs is None else num_docs
        depth = num_docs if old is None else old.k
        if isinstance(num_docs, int) and num_docs > depth:
            depth = num_docs  # Other values are checked by the layer.
        backend = backend or (old.backend if old is not None else "faiss")
        query_encoder, retriever = query_retriever_like(
            self.rag.query_encoder, old, index, depth, backend, lexical_weight)
        rag = RetrievalAugmentedGenerator(
            query_encoder,
            retriever,
            self.rag.generator,
            passage_tokens=PassageTokenTable.from_index(index, self.preprocessor),
            num_docs=num_docs,
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


QUERY_ENCODER_LEARNING_RATE_FACTOR = 0.1


def query_encoder_optimizer_for(optimizer, query_encoder_optimizer, query_encoder):
    """The optimizer of a trainable query encoder, or `None`.

    Args:
        optimizer: the model's compiled optimizer.
        query_encoder_optimizer: `"auto"` (a copy of `optimizer` at
            `QUERY_ENCODER_LEARNING_RATE_FACTOR` times its learning rate when
            the encoder has trainable weights), `None`, or an optimizer or name.
        query_encoder: the RAG layer's query encoder.

    Example:

    >>> import keras
    >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> adam = keras.optimizers.Adam(1e-3)
    >>> round(float(query_encoder_optimizer_for(adam, "auto", encoder).learning_rate), 8)
    0.0001
    >>> encoder.trainable = False
    >>> query_encoder_optimizer_for(adam, "auto", encoder) is None
    True
    """
    if query_encoder_optimizer is None or not query_encoder.trainable_variables:
        return None
    if query_encoder_optimizer != "auto":
        return keras.optimizers.get(query_encoder_optimizer)
    config = optimizer.get_config()
    learning_rate = config["learning_rate"]
    if not isinstance(learning_rate, (int, float)):
        raise ValueError(
            '`query_encoder_optimizer="auto"` scales a constant learning rate; with a '
            "schedule, pass the query encoder's optimizer yourself. Received: "
            f"learning_rate={learning_rate!r}"
        )
    config["learning_rate"] = learning_rate * QUERY_ENCODER_LEARNING_RATE_FACTOR
    config["name"] = "query_encoder_" + config["name"]
    return type(optimizer).from_config(config)


def _gather_strings(table, retrieved):
    """`table[rows]` where the retrieval is valid, `""` elsewhere."""
    return tf.where(retrieved["mask"], tf.gather(table, retrieved["rows"]), "")


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

    >>> from keras_ragkd.rag import RagPreprocessor
    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> preprocessor = RagPreprocessor.from_texts(
    ...     load_minilm_tokenizer(), ["The capital of Peru is Lima."])
    >>> generator = build_generator("tiny", preprocessor)
    >>> generator.vocabulary_size == preprocessor.vocabulary_size
    True
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


def index_query_encoder(index, query_encoder=None):
    """`query_encoder`, or the index's own encoder as a Keras layer.

    Example:

    >>> import numpy as np
    >>> from keras_ragkd.retrieval import PassageIndex
    >>> index = PassageIndex.from_embeddings([{"id": "a", "text": "A."}], np.ones((1, 2)))
    >>> index_query_encoder(index)
    Traceback (most recent call last):
    ...
    ValueError: The index has no encoder of its own (it was built from embeddings), so a `query_encoder` is needed. Received: query_encoder=None
    """
    if query_encoder is None:
        if index.encoder is None:
            raise ValueError(
                "The index has no encoder of its own (it was built from embeddings), so a "
                "`query_encoder` is needed. Received: query_encoder=None"
            )
        query_encoder = keras_query_encoder(index.encoder)
    return query_encoder


def build_query_retriever(index, query_encoder, k, backend, lexical_weight=None,
                    train_query_encoder=False, **fusion):
    """`(query_encoder, retriever)` of a RAG model over `index`: dense or hybrid.

    Dense: the query encoder as given and a `PassageRetriever`. With a
    `lexical_weight`, a `TfidfEncoder` fitted on the index's passages
    (`"title. text"`, words and word pairs) adds lexical evidence: the query
    encoder becomes a `HybridQueryEncoder` (dense + TF-IDF vectors) and the
    retriever a `HybridRetriever` (weighted fusion by default). On the
    element knowledge base this lifts MiniLM's gold-passage recall@2 from
    0.84 to 0.97 at weight 0.5 ("Which element has atomic number 6?": 0.14
    → 0.98), where a number or a symbol, not a meaning, finds the passage.

    Args:
        index: the `PassageIndex`.
        query_encoder: the dense query encoder (checked against `index`).
        k: passages per query.
        backend: `"faiss"` or `"tensor"`.
        lexical_weight: `None` (dense) or float >= 0, the lexical score's
            weight.
        train_query_encoder: bool; a trained query encoder re-embeds the index,
            which the hybrid retriever does not support.
        **fusion: other `HybridRetriever` arguments (`fusion`, `candidates`,
            `rrf_constant`).

    Example:

    >>> from keras_ragkd.data import country_passages
    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder, TfidfQueryEncoder
    >>> passages = country_passages(["France", "Peru", "Japan"])
    >>> tfidf = TfidfEncoder(dim=8).fit([p["text"] for p in passages])
    >>> index = PassageIndex.build(passages, tfidf, verbose=0)
    >>> encoder, retriever = build_query_retriever(
    ...     index, TfidfQueryEncoder.from_encoder(tfidf), k=2, backend="tensor",
    ...     lexical_weight=0.5)
    >>> type(encoder).__name__, type(retriever).__name__
    ('HybridQueryEncoder', 'HybridRetriever')
    """
    check_query_encoder(query_encoder, index)
    if lexical_weight is None:
        return query_encoder, PassageRetriever(index, k=k, backend=backend)
    lexical_weight = check_number("lexical_weight", lexical_weight, low=0)
    if train_query_encoder:
        raise ValueError(
            "A trained query encoder re-embeds the index after each epoch, which hybrid "
            "retrieval does not support; train the dense encoder without `lexical_weight`. "
            f"Received: lexical_weight={lexical_weight}, train_query_encoder=True"
        )
    tfidf = TfidfEncoder(dim=8).fit([passage_text(p) for p in index.passages])
    retriever = HybridRetriever(index, tfidf, k=k, backend=backend,
                                lexical_weight=lexical_weight, **fusion)
    return HybridQueryEncoder(query_encoder, tfidf), retriever


def query_retriever_like(query_encoder, retriever, index, k, backend, lexical_weight="same"):
    """`(query_encoder, retriever)` over another index.

    With `lexical_weight="same"` it retrieves as before: a hybrid model gets
    a TF-IDF vocabulary of the new index's passages (the old one may lack
    its words) with the same fusion settings. `None` makes it dense, a float
    hybrid with that weight.
    """
    same = isinstance(lexical_weight, str) and lexical_weight == "same"
    if not isinstance(retriever, HybridRetriever):
        return build_query_retriever(index, query_encoder, k, backend,
                                     None if same else lexical_weight)
    if same:
        lexical_weight = float(keras.ops.convert_to_numpy(retriever.lexical_weight))
    return build_query_retriever(
        index, query_encoder.dense_encoder, k, backend, lexical_weight,
        fusion=retriever.fusion, candidates=max(retriever.candidates, k),
        rrf_constant=retriever.rrf_constant,
    )


def build_rag_question_answerer(index, query_encoder=None, preprocessor=None, generator="small",
                                num_docs=3, k=None, marginalization="token",
                                backend="faiss", doc_score_scale=10.0, dropout=0.1,
                                train_query_encoder=False, lexical_weight=None):
    """Builds a `RagQuestionAnswerer` over an index in one call.

    Args:
        index: a `PassageIndex` (embedded by `query_encoder`'s family).
        query_encoder: Keras model, the preprocessor's `"query"` (raw strings
            or token ids) → `(batch, index.dim)`; `None` takes the index's
            own encoder (`keras_query_encoder(index.encoder)`).
        preprocessor: a `RagPreprocessor`; models that share one share the
            output vocabulary (as a distillation teacher and student must).
            `None` builds one over the index's passages
            (`RagPreprocessor.from_index(index)`).
        generator: a size name from `GENERATOR_SIZES` (`"tiny"`, `"small"`,
            `"base"`, or `"minilm"`: a frozen pretrained MiniLM reader under
            a trained copy decoder), a dict of `CopyTransformerGenerator`
            arguments (`source_encoder="minilm"` builds a `MiniLMReader` on
            the preprocessor's vocabulary; `"reader_fine_tune_layers": n`
            trains its top `n` layers), or a generator layer.
        num_docs: passages per question.
        k: retriever depth (defaults to `num_docs`).
        marginalization: `"token"` or `"sequence"`.
        backend: `"faiss"` or `"tensor"`.
        doc_score_scale: initial multiplier of the scores in `P(z|x)`.
        dropout: generator dropout (for size names and dicts).
        train_query_encoder: bool. By default the query encoder is frozen
            (`trainable = False`): the index was embedded by that encoder, and
            fine-tuning the query side alone moves queries away from it (with
            Adam at 1e-3 on MiniLM, gold-passage recall@3 fell from 1.00 to
            0.00 in 20 steps). With True, `compile` gives the encoder its
            own optimizer at a tenth of the learning rate and `fit`
            re-embeds the index after each epoch (a `PassageReindexer`), so
            the index follows the encoder.
        lexical_weight: `None` (dense retrieval) or a float: hybrid retrieval,
            TF-IDF scores of the index's passages fused in with this weight
            (see `build_query_retriever`); `with_index` keeps it.

    Example:

    >>> from keras_ragkd.data.countries import country_passages
    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder, TfidfQueryEncoder
    >>> from keras_ragkd.rag import RagPreprocessor
    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> passages = country_passages(["France", "Peru", "Japan"])
    >>> tfidf = TfidfEncoder(dim=8).fit([p["text"] for p in passages])
    >>> index = PassageIndex.build(passages, tfidf, verbose=0)
    >>> preprocessor = RagPreprocessor.from_texts(
    ...     load_minilm_tokenizer(), [p["text"] for p in passages])
    >>> model = build_rag_question_answerer(
    ...     index, TfidfQueryEncoder.from_encoder(tfidf), preprocessor,
    ...     generator="tiny", num_docs=2)
    >>> model.retrieve(["What is the capital of Peru?"])[0][0]["id"]
    'peru/capital'

    The index's own encoder and a vocabulary of its passages by default:

    >>> build_rag_question_answerer(index, generator="tiny").preprocessor.vocabulary_size > 20
    True
    """
    query_encoder = index_query_encoder(index, query_encoder)
    preprocessor = preprocessor or RagPreprocessor.from_index(index)
    query_encoder.trainable = bool(train_query_encoder)
    generator = build_generator(generator, preprocessor, dropout)
    query_encoder, retriever = build_query_retriever(
        index, query_encoder, k or num_docs, backend, lexical_weight, train_query_encoder)
    rag = RetrievalAugmentedGenerator(
        query_encoder,
        retriever,
        generator,
        passage_tokens=PassageTokenTable.from_index(index, preprocessor),
        num_docs=num_docs,
        marginalization=marginalization,
        doc_score_scale=doc_score_scale,
    )
    return RagQuestionAnswerer(preprocessor, rag)
