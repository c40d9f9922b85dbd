"""`RetrievalAugmentedGenerator`: retrieve passages, generate, marginalise."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.rag.decoding import beam_search
from keras_ragkd.rag.input_pipeline_retrieval import CANDIDATE_KEYS
from keras_ragkd.rag.input_pipeline_retrieval import has_candidates
from keras_ragkd.rag.input_pipeline_retrieval import retrieved_from_candidates
from keras_ragkd.rag.marginalization import add_document_log_probs
from keras_ragkd.rag.marginalization import document_log_probs
from keras_ragkd.rag.marginalization import rag_token_marginal
from keras_ragkd.rag.passage_tokens import PassageTokenTable
from keras_ragkd.validation import check_integer
from keras_ragkd.validation import check_number

MARGINALIZATIONS = ("token", "sequence")


def _repeat_groups(tensor, batch_size, group_size, repeats):
    """`(batch * group, ...)` → `(batch * repeats * group, ...)`, groups kept whole."""
    rest = tf.shape(tensor)[1:]
    grouped = tf.reshape(tensor, [batch_size, -1])
    repeated = tf.repeat(grouped, repeats, axis=0)
    return tf.reshape(repeated, tf.concat([[-1], rest], axis=0))


def _check_passage_tokens(retriever, passage_tokens):
    """Refuses a retriever without a token table, or one of another size."""
    if retriever is None:
        return
    if passage_tokens is None:
        raise ValueError(
            "A RetrievalAugmentedGenerator with a retriever needs `passage_tokens` "
            "(e.g. `PassageTokenTable.from_index(index, preprocessor)`) so the "
            "generator can read the retrieved passages. Received: passage_tokens=None"
        )
    index = getattr(retriever, "index", None)
    if index is not None and len(index) != passage_tokens.num_passages:
        raise ValueError(
            f"`passage_tokens` must hold one row per passage of the retriever's index "
            f"({len(index)}). Received: passage_tokens.num_passages="
            f"{passage_tokens.num_passages}"
        )


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RetrievalAugmentedGenerator(keras.layers.Layer):
    """Retrieval-augmented generation (RAG-Token or RAG-Sequence) as a layer.

    For each input the `query_encoder` embeds the query, the `retriever`
    (a `keras_ragkd.retrieval.PassageRetriever`, FAISS via `tf.py_function`
    or in-graph) returns the rows of `num_docs` passages and their scores
    `<q, d_z>` recomputed in the graph, the layer's `passage_tokens` (a
    `PassageTokenTable`) maps the rows to the generator's token ids, the
    `generator` reads `[question tokens; passage tokens]` for each passage,
    and the per-passage distributions are marginalised with
    `P(z|x) = softmax(scale * scores)`:

    - `marginalization="token"`: output `(batch, time, vocab)` marginal
      log-probabilities `log P(y_t|x, y_<t)`; train with
      `RagTokenLoss` or `SparseCategoricalCrossentropy(from_logits=True)`,
      distil with the `Distiller`.
    - `marginalization="sequence"`: output `(batch, num_docs, time, vocab)`
      per-passage log-probabilities with `log P(z|x)` folded into the first
      step; train with `RagSequenceLoss`.

    Gradients reach the query encoder through the document scores. Passages
    the retriever marks invalid get `P(z|x) = 0`.

    Inputs are a dict with `"query"` (whatever `query_encoder` takes: raw
    strings or token ids), `"question_token_ids"` `(batch, question_length)`
    and `"decoder_token_ids"` `(batch, time)`.

    Retrieval in the input pipeline: inputs may also carry candidates
    retrieved outside the model (`"candidate_rows"`, `"candidate_mask"`,
    `"candidate_embeddings"`, `"candidate_token_ids"`, as
    `keras_ragkd.rag.input_pipeline_retrieval.with_retrieved_passages` adds
    them from FAISS in `tf.data`). The layer then uses them instead of its
    retriever and token table (and may have neither, `retriever=None`); the
    scores `<q, d_z>` are recomputed from the query encoder as the retriever
    does, so the query encoder trains the same way and the step has no
    `tf.py_function` (XLA, TPUs).

    The generator is any layer mapping `{"encoder_token_ids",
    "decoder_token_ids", "copy_mask"}` to logits or log-probabilities
    `(batch, time, vocab)` (log-softmax is applied, which leaves
    log-probabilities unchanged); if it also has `encode`/`decode` methods
    (like `CopyTransformerGenerator`) generation reuses the encoder state.
    A decoder-only generator (`CausalLMGenerator`, a keras-hub llama-family
    backbone) has `encode_prompts(question_token_ids, passage_token_ids,
    copy_from_question=...)` instead of `encode`: it builds one chat prompt
    per passage itself (and the mask of what its copy head may copy) and
    `decode` returns the logits at the answer positions; greedy RAG-Token
    decoding then uses its KV cache (`rag_token_greedy_search`).

    Args:
        query_encoder: Keras layer, query → `(batch, dim)` embeddings.
        retriever: `PassageRetriever` whose `k >= num_docs`; or `None` when
            every input carries retrieved candidates (retrieval in the input
            pipeline).
        generator: Keras layer, see above.
        passage_tokens: a `PassageTokenTable` (or the int array
            `(num_passages, length)` of one) holding the generator's token
            ids of every row of the retriever's index, e.g.
            `PassageTokenTable.from_index(index, preprocessor)`; required
            with a retriever.
        num_docs: int, passages per input.
        marginalization: `"token"` or `"sequence"`.
        doc_score_scale: positive float, initial multiplier of the retrieval
            scores in `P(z|x)` (unit-norm embeddings give scores in [-1, 1]).
            It is learned in log space (the `log_doc_score_scale` weight,
            like CLIP's logit scale), so an optimizer step changes it by a
            relative amount: Adam moves a plain scale of 10 by only about the
            learning rate per step, too little to sharpen `P(z|x)` in training.
        train_doc_score_scale: bool, whether the scale is trainable.
        copy_from_question: bool, whether the generator may copy question
            tokens (else only passage tokens; a decoder-only generator's
            copy head never copies its chat template).
        padding_id: int, the padding token id.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ragkd.rag import CopyTransformerGenerator, PassageTokenTable
    >>> from keras_ragkd.retrieval import PassageIndex, PassageRetriever
    >>> passage_ids = np.array([[5, 6, 7], [8, 9, 0], [5, 9, 7]])
    >>> query_encoder = keras.Sequential([keras.layers.Embedding(20, 8),
    ...     keras.layers.GlobalAveragePooling1D(), keras.layers.UnitNormalization()])
    >>> index = PassageIndex.from_embeddings(
    ...     [{"id": str(i), "text": f"passage {i}"} for i in range(3)],
    ...     np.asarray(query_encoder(passage_ids)))
    >>> generator = CopyTransformerGenerator(20, hidden_dim=8, num_heads=2,
    ...     intermediate_dim=16, max_sequence_length=8)
    >>> rag = RetrievalAugmentedGenerator(query_encoder, PassageRetriever(index, k=2),
    ...     generator, passage_tokens=PassageTokenTable(passage_ids), num_docs=2)
    >>> question = np.array([[5, 6, 0]])
    >>> log_probs = rag({"query": question, "question_token_ids": question,
    ...                  "decoder_token_ids": np.array([[2, 7]])})
    >>> log_probs.shape
    TensorShape([1, 2, 20])
    """

    def __init__(
        self,
        query_encoder,
        retriever,
        generator,
        passage_tokens=None,
        num_docs=5,
        marginalization="token",
        doc_score_scale=10.0,
        train_doc_score_scale=True,
        copy_from_question=False,
        padding_id=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if marginalization not in MARGINALIZATIONS:
            raise ValueError(
                f"`marginalization` must be one of {MARGINALIZATIONS}. "
                f"Received: marginalization={marginalization!r}"
            )
        num_docs = check_integer("num_docs", num_docs)
        # Learned as its logarithm.
        doc_score_scale = check_number(
            "doc_score_scale", doc_score_scale, low=0, low_inclusive=False
        )
        retriever_k = getattr(retriever, "k", num_docs)
        if retriever_k < num_docs:
            raise ValueError(
                "The retriever must return at least `num_docs` passages per "
                f"query; its `k` is {retriever_k}. Received: num_docs={num_docs}"
            )
        if passage_tokens is not None and not isinstance(passage_tokens, PassageTokenTable):
            passage_tokens = PassageTokenTable(passage_tokens)
        _check_passage_tokens(retriever, passage_tokens)
        self.query_encoder = query_encoder
        self.retriever = retriever
        self.generator = generator
        self.passage_tokens = passage_tokens
        self.num_docs = num_docs
        self.marginalization = marginalization
        self.initial_doc_score_scale = doc_score_scale
        self.train_doc_score_scale = bool(train_doc_score_scale)
        self.copy_from_question = bool(copy_from_question)
        self.padding_id = int(padding_id)
        self.log_doc_score_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_doc_score_scale)),
            trainable=self.train_doc_score_scale,
            autocast=False,
            name="log_doc_score_scale",
        )
        self._stored_plain_scale = False
        self.built = True

    @property
    def doc_score_scale(self):
        """The current multiplier of the retrieval scores, `exp(log_doc_score_scale)`.

        A float32 tensor; to set it, assign its logarithm to
        `log_doc_score_scale`.
        """
        return tf.exp(tf.cast(self.log_doc_score_scale, "float32"))

    def retrieve(self, inputs, training=None):
        """Embeds the queries and retrieves `num_docs` passages each.

        The passages come from the retriever and their token ids from
        `passage_tokens`, or both from the candidates in `inputs` when it
        carries them (retrieval in the input pipeline).

        Returns:
            A dict with `"rows"` int32 `(batch, num_docs)`, `"mask"` bool,
            `"doc_scores"` float32 (raw inner products),
            `"doc_log_probs"` float32 `log P(z|x)` and
            `"passage_token_ids"` int32 `(batch, num_docs, length)`.
        """
        query_embeddings = self.query_encoder(inputs["query"], training=training)
        if has_candidates(inputs):
            retrieved = retrieved_from_candidates(query_embeddings, inputs)
            self._check_candidate_count(retrieved["rows"])
        elif self.retriever is None:
            raise ValueError(
                "This RetrievalAugmentedGenerator has no retriever: its inputs must "
                f"carry retrieved candidates ({', '.join(CANDIDATE_KEYS)}), e.g. "
                "from `keras_ragkd.rag.input_pipeline_retrieval.with_retrieved_passages`. "
                "Received: keys "
                f"{sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
            )
        else:
            retrieved = self.retriever(query_embeddings)
        n = self.num_docs
        rows = retrieved["rows"][:, :n]
        if "passage_token_ids" in retrieved:  # Candidates from the input pipeline.
            passage_token_ids = retrieved["passage_token_ids"][:, :n]
        else:
            passage_token_ids = self.passage_tokens(rows)
        result = {
            "rows": rows,
            "mask": tf.cast(retrieved["mask"][:, :n], "bool"),
            "doc_scores": tf.cast(retrieved["doc_scores"][:, :n], "float32"),
            "passage_token_ids": tf.cast(passage_token_ids, "int32"),
        }
        result["doc_log_probs"] = document_log_probs(
            self.doc_score_scale * result["doc_scores"], result["mask"]
        )
        return result

    def _check_candidate_count(self, rows):
        count = rows.shape[1]
        if count is not None and count < self.num_docs:
            raise ValueError(
                f"Inputs must carry at least `num_docs={self.num_docs}` candidates per "
                f"query. Received: candidate_rows.shape={tuple(rows.shape)}"
            )

    def _generator_sources(self, question_token_ids, passage_token_ids):
        """`[question; passage]` ids `(batch * num_docs, source)` and the copy mask."""
        question_token_ids = tf.cast(question_token_ids, "int32")
        questions = tf.repeat(question_token_ids, self.num_docs, axis=0)
        passages = tf.reshape(
            passage_token_ids, [-1, tf.shape(passage_token_ids)[-1]]
        )
        sources = tf.concat([questions, passages], axis=1)
        copy_mask = tf.not_equal(sources, self.padding_id)
        if not self.copy_from_question:
            in_passage = tf.concat(
                [tf.zeros_like(questions, "bool"), tf.ones_like(passages, "bool")], axis=1
            )
            copy_mask = tf.logical_and(copy_mask, in_passage)
        return sources, copy_mask

    def encode_context(self, inputs, training=None):
        """Retrieval plus the generator's encoder pass, reusable across steps."""
        retrieved = self.retrieve(inputs, training=training)
        if hasattr(self.generator, "encode_prompts"):
            # A decoder-only generator assembles its own prompts.
            encoded = self.generator.encode_prompts(
                inputs["question_token_ids"], retrieved["passage_token_ids"],
                training=training, copy_from_question=self.copy_from_question,
            )
            return {"retrieved": retrieved, "encoded": encoded}
        sources, copy_mask = self._generator_sources(
            inputs["question_token_ids"], retrieved["passage_token_ids"]
        )
        if hasattr(self.generator, "encode"):
            encoded = self.generator.encode(sources, copy_mask, training=training)
        else:
            encoded = {"encoder_token_ids": sources, "copy_mask": copy_mask}
        return {"retrieved": retrieved, "encoded": encoded}

    def _token_log_probs(self, encoded, decoder_token_ids, training=None):
        """Per-passage log-probabilities, `(batch * num_docs, time, vocab)`."""
        if hasattr(self.generator, "decode"):
            outputs = self.generator.decode(encoded, decoder_token_ids, training=training)
        else:
            outputs = self.generator(
                dict(encoded, decoder_token_ids=decoder_token_ids), training=training
            )
        return tf.nn.log_softmax(tf.cast(outputs, "float32"), axis=-1)

    def call(self, inputs, training=None):
        context = self.encode_context(inputs, training=training)
        decoder_token_ids = tf.repeat(
            tf.cast(inputs["decoder_token_ids"], "int32"), self.num_docs, axis=0
        )
        log_probs = self._token_log_probs(
            context["encoded"], decoder_token_ids, training=training
        )
        shape = tf.shape(log_probs)
        log_probs = tf.reshape(log_probs, [-1, self.num_docs, shape[1], shape[2]])
        doc_log_probs = context["retrieved"]["doc_log_probs"]
        if self.marginalization == "token":
            return rag_token_marginal(doc_log_probs, log_probs)
        return add_document_log_probs(doc_log_probs, log_probs)

    def generate_token_ids(self, inputs, start_id, end_id, max_length=8,
                           num_beams=1, vocabulary_size=None, marginalization=None,
                           use_cache=True):
        """Decodes answers with RAG-Token or RAG-Sequence decoding.

        RAG-Token decoding runs one beam search over the per-token marginal.
        RAG-Sequence decoding runs a beam search per passage, then rescores
        every candidate under every passage ("thorough" decoding) and keeps
        the best `logsumexp_z(log P(z|x) + log P(y|x, z))`. Both loops are
        `tf.while_loop`s (see `beam_search`), so a `tf.function` around this
        method traces once and exports.

        Args:
            inputs: dict with `"query"` and `"question_token_ids"`.
            start_id: int, the first decoder token.
            end_id: int, the end token.
            max_length: int, generated tokens.
            num_beams: int, 1 for greedy.
            vocabulary_size: int, the generator's output size (read from the
                generator when it has `vocabulary_size`).
            marginalization: `"token"`, `"sequence"` or `None` for the
                layer's own.
            use_cache: bool. Greedy RAG-Token decoding uses the generator's
                KV cache when it has one (`rag_token_greedy_search`, e.g.
                `CausalLMGenerator`); False recomputes every step.

        Returns:
            A tuple `(token_ids, scores)`: int32 `(batch, max_length)`
            (ending with `end_id` then padding) and float32 `(batch,)`.
        """
        context = self.encode_context(inputs, training=False)
        return self.decode_context(
            context, start_id, end_id, max_length=max_length, num_beams=num_beams,
            vocabulary_size=vocabulary_size, marginalization=marginalization,
            use_cache=use_cache,
        )

    def decode_context(self, context, start_id, end_id, max_length=8, num_beams=1,
                       vocabulary_size=None, marginalization=None, use_cache=True):
        """`generate_token_ids` from an `encode_context` result.

        Callers that also need the retrieved passages (`context["retrieved"]`)
        retrieve once and decode from the same context.
        """
        marginalization = marginalization or self.marginalization
        if marginalization not in MARGINALIZATIONS:
            raise ValueError(
                f"`marginalization` must be one of {MARGINALIZATIONS}. "
                f"Received: marginalization={marginalization!r}"
            )
        vocabulary_size = vocabulary_size or self.generator.vocabulary_size
        batch_size = tf.shape(context["retrieved"]["rows"])[0]
        search = dict(
            vocabulary_size=vocabulary_size, start_id=start_id, end_id=end_id,
            max_length=max_length, num_beams=num_beams, padding_id=self.padding_id,
        )
        if (marginalization == "token" and num_beams == 1 and use_cache
                and hasattr(self.generator, "rag_token_greedy_search")):
            return self.generator.rag_token_greedy_search(
                context["encoded"], context["retrieved"]["doc_log_probs"], start_id, end_id,
                max_length=max_length, padding_id=self.padding_id,
            )
        if marginalization == "token":
            ids, scores = self._token_search(context, batch_size, search)
            return ids[:, 0], scores[:, 0]
        return self._sequence_search(context, batch_size, search)

    def _next_token_log_probs(self, encoded, ids, position):
        """Per-passage log-probabilities of the token after `position`."""
        per_doc = self._token_log_probs(encoded, ids)
        return tf.gather(per_doc, position, axis=1)

    def _token_search(self, context, batch_size, search):
        beams, num_docs = search["num_beams"], self.num_docs
        encoded = {
            key: _repeat_groups(value, batch_size, num_docs, beams)
            for key, value in context["encoded"].items()
        }
        doc_log_probs = tf.repeat(context["retrieved"]["doc_log_probs"], beams, axis=0)

        def next_log_probs(ids, position):
            last = self._next_token_log_probs(encoded, tf.repeat(ids, num_docs, axis=0), position)
            last = tf.reshape(last, [-1, num_docs, search["vocabulary_size"]])
            return tf.reduce_logsumexp(doc_log_probs[:, :, None] + last, axis=1)

        return beam_search(next_log_probs, batch_size, **search)

    def _sequence_search(self, context, batch_size, search):
        beams, num_docs = search["num_beams"], self.num_docs
        encoded = {
            key: tf.repeat(value, beams, axis=0)
            for key, value in context["encoded"].items()
        }

        def next_log_probs(ids, position):
            return self._next_token_log_probs(encoded, ids, position)

        candidates, _ = beam_search(next_log_probs, batch_size * num_docs, **search)
        num_candidates = num_docs * beams
        candidates = tf.reshape(candidates, [batch_size, num_candidates, -1])
        scores = self._sequence_scores(context, batch_size, candidates, search["start_id"])
        best = tf.argmax(scores, axis=-1, output_type="int32")
        return (
            tf.gather(candidates, best, batch_dims=1),
            tf.gather(scores, best, batch_dims=1),
        )

    def _sequence_scores(self, context, batch_size, candidates, start_id):
        """`log P(y|x)` of candidates `(batch, num_candidates, time)`."""
        num_docs = self.num_docs
        num_candidates = tf.shape(candidates)[1]
        encoded = {
            key: _repeat_groups(value, batch_size, num_docs, num_candidates)
            for key, value in context["encoded"].items()
        }
        labels = tf.reshape(candidates, [batch_size * num_candidates, -1])
        starts = tf.fill([tf.shape(labels)[0], 1], tf.constant(start_id, "int32"))
        decoder_ids = tf.concat([starts, labels[:, :-1]], axis=1)
        per_doc = self._token_log_probs(encoded, tf.repeat(decoder_ids, num_docs, axis=0))
        doc_labels = tf.repeat(labels, num_docs, axis=0)
        picked = tf.gather(per_doc, doc_labels, axis=-1, batch_dims=2)
        valid = tf.cast(tf.not_equal(doc_labels, self.padding_id), "float32")
        sequence = tf.reshape(
            tf.reduce_sum(picked * valid, axis=-1), [batch_size, num_candidates, num_docs]
        )
        doc_log_probs = context["retrieved"]["doc_log_probs"][:, None, :]
        return tf.reduce_logsumexp(sequence + doc_log_probs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "query_encoder": keras.saving.serialize_keras_object(self.query_encoder),
                "retriever": keras.saving.serialize_keras_object(self.retriever),
                "generator": keras.saving.serialize_keras_object(self.generator),
                "passage_tokens": keras.saving.serialize_keras_object(self.passage_tokens),
                "num_docs": self.num_docs,
                "marginalization": self.marginalization,
                "doc_score_scale": self.initial_doc_score_scale,
                "train_doc_score_scale": self.train_doc_score_scale,
                "copy_from_question": self.copy_from_question,
                "padding_id": self.padding_id,
                "scale_weight": "log",
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("query_encoder", "retriever", "generator", "passage_tokens"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        # Files saved before the scale was learned in log space (no
        # "scale_weight" entry) stored the scale itself as the weight.
        stored_plain_scale = config.pop("scale_weight", None) is None
        layer = cls(**config)
        layer._stored_plain_scale = stored_plain_scale
        return layer

    def load_own_variables(self, store):
        if not self._stored_plain_scale:
            return super().load_own_variables(store)
        self._check_load_own_variables(store)
        self.log_doc_score_scale.assign(np.log(np.asarray(store["0"], "float32")))
        self._stored_plain_scale = False
