"""`CausalLMRagQuestionAnswerer`: the RAG task with a keras-hub causal LM generator."""

import keras

from keras_ragkd.rag.causal_lm_generator import CausalLMGenerator
from keras_ragkd.rag.causal_lm_preprocessor import CausalLMRagPreprocessor
from keras_ragkd.rag.passage_tokens import PassageTokenTable
from keras_ragkd.rag.rag_question_answerer import RagQuestionAnswerer
from keras_ragkd.rag.rag_question_answerer import build_query_retriever
from keras_ragkd.rag.rag_question_answerer import index_query_encoder
from keras_ragkd.rag.retrieval_augmented_generator import RetrievalAugmentedGenerator


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CausalLMRagQuestionAnswerer(RagQuestionAnswerer):
    """`RagQuestionAnswerer` whose generator is a keras-hub causal LM.

    The same task on raw strings (`fit`/`evaluate`/`predict`/`generate`/
    `retrieve`/`with_index`/`export`), with a `CausalLMRagPreprocessor`
    and a `RetrievalAugmentedGenerator` over a `CausalLMGenerator`: the
    start, end and padding ids come from the preprocessor's tokenizer
    (`<|im_end|>` ends answers), and greedy RAG-Token `generate` decodes with
    the backbone's KV cache (`use_cache=False` recomputes every step;
    beam search and RAG-Sequence decoding recompute too).

    Args:
        preprocessor: a `CausalLMRagPreprocessor`.
        rag: a `RetrievalAugmentedGenerator` whose generator is a
            `CausalLMGenerator` over the preprocessor's vocabulary.
        **kwargs: `keras.Model` arguments.

    Example:

    >>> import keras, keras_hub
    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf, smollm2_gguf_path
    >>> from keras_ragkd.rag import CausalLMRagPreprocessor
    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder, TfidfQueryEncoder
    >>> passages = [{"id": "fr", "text": "The capital of France is Paris."},
    ...             {"id": "pe", "text": "The capital of Peru is Lima."}]
    >>> tfidf = TfidfEncoder(dim=1).fit([p["text"] for p in passages] + ["Rome, Italy"])
    >>> index = PassageIndex.build(passages, tfidf, verbose=0)
    >>> preprocessor = CausalLMRagPreprocessor(
    ...     llama3_tokenizer_from_gguf(smollm2_gguf_path()), query_as_text=True)
    >>> keras.utils.set_random_seed(0)
    >>> backbone = keras_hub.models.Llama3Backbone(  # or load_smollm2().backbone
    ...     vocabulary_size=preprocessor.vocabulary_size, num_layers=1, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
    ...     tie_word_embeddings=True)
    >>> model = build_causal_lm_rag_question_answerer(
    ...     index, TfidfQueryEncoder.from_encoder(tfidf), preprocessor, backbone,
    ...     num_docs=2, lora_rank=2)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-2))
    >>> history = model.fit(["What is the capital of Peru?"], ["Lima"], epochs=2, verbose=0)
    >>> answers = model.generate(["What is the capital of Peru?"], max_length=3)
    >>> len(answers), type(answers[0])  # a random tiny backbone: strings, not yet Lima
    (1, <class 'str'>)
    """

    def with_index(self, index, backend=None, num_docs=None, lexical_weight="same"):
        """A model answering from another knowledge base, sharing the weights."""
        model = super().with_index(index, backend=backend, num_docs=num_docs,
                                   lexical_weight=lexical_weight)
        return CausalLMRagQuestionAnswerer(model.preprocessor, model.rag)


def build_causal_lm_rag_question_answerer(index, query_encoder, preprocessor, causal_lm,
                                          num_docs=3, k=None, marginalization="token",
                                          backend="faiss", doc_score_scale=10.0,
                                          lora_rank=None, train_query_encoder=False,
                                          lexical_weight=None, copy_head_dim=None,
                                          copy_from_question=False):
    """Builds a `CausalLMRagQuestionAnswerer` over an index in one call.

    Args:
        index: a `PassageIndex` (embedded by `query_encoder`'s family).
        query_encoder: Keras model, the preprocessor's `"query"` (raw strings
            or token ids) → `(batch, index.dim)`, or `None` for the index's
            own encoder.
        preprocessor: a `CausalLMRagPreprocessor` (its tokenizer must be the
            causal LM's), or `None` to build one from `causal_lm.preprocessor`'s
            tokenizer with default lengths.
        causal_lm: a keras-hub llama-family `CausalLM` (e.g.
            `keras_ragkd.models.load_smollm2()`) or its backbone.
        num_docs: passages per question.
        k: retriever depth (defaults to `num_docs`).
        marginalization: `"token"` or `"sequence"`.
        backend: `"faiss"` or `"tensor"`.
        doc_score_scale: initial multiplier of the scores in `P(z|x)`.
        lora_rank: int or `None`. If set, `backbone.enable_lora(lora_rank)`:
            only the LoRA weights of the backbone train.
        train_query_encoder: bool, see `build_rag_question_answerer` (frozen
            by default).
        lexical_weight: `None` (dense retrieval) or a float: hybrid retrieval
            (see `build_query_retriever`).
        copy_head_dim: `None`, an int or a `CopyHead`: the generator gets a
            `CopyHead` (of that key width, or this one) and can copy answer
            tokens from its prompt.
        copy_from_question: bool, whether the `CopyHead` may copy the
            question's tokens besides the retrieved passage's (the chat
            template's never).

    Example (with LoRA only the LoRA factors and the passage-posterior
    scale train):

    >>> import keras, keras_hub
    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf, smollm2_gguf_path
    >>> from keras_ragkd.rag import CausalLMRagPreprocessor
    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder, TfidfQueryEncoder
    >>> passages = [{"id": "fr", "text": "The capital of France is Paris."},
    ...             {"id": "pe", "text": "The capital of Peru is Lima."}]
    >>> tfidf = TfidfEncoder(dim=1).fit([p["text"] for p in passages] + ["Rome, Italy"])
    >>> index = PassageIndex.build(passages, tfidf, verbose=0)
    >>> preprocessor = CausalLMRagPreprocessor(
    ...     llama3_tokenizer_from_gguf(smollm2_gguf_path()), query_as_text=True)
    >>> keras.utils.set_random_seed(0)
    >>> backbone = keras_hub.models.Llama3Backbone(  # or load_smollm2().backbone
    ...     vocabulary_size=preprocessor.vocabulary_size, num_layers=1, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
    ...     tie_word_embeddings=True)
    >>> model = build_causal_lm_rag_question_answerer(
    ...     index, TfidfQueryEncoder.from_encoder(tfidf), preprocessor, backbone,
    ...     num_docs=2, lora_rank=2)
    >>> sorted(v.path.split("/")[-1] for v in model.trainable_variables)[:3]
    ['log_doc_score_scale', 'lora_kernel_a', 'lora_kernel_a']
    """
    query_encoder = index_query_encoder(index, query_encoder)
    query_encoder.trainable = bool(train_query_encoder)
    if preprocessor is None:
        preprocessor = CausalLMRagPreprocessor(causal_lm.preprocessor.tokenizer)
    backbone = causal_lm.backbone if hasattr(causal_lm, "backbone") else causal_lm
    if lora_rank:
        backbone.enable_lora(lora_rank)
    generator = CausalLMGenerator.from_preprocessor(backbone, preprocessor,
                                                    copy_head=copy_head_dim)
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
        copy_from_question=copy_from_question,
        padding_id=preprocessor.padding_id,
    )
    return CausalLMRagQuestionAnswerer(preprocessor, rag)
