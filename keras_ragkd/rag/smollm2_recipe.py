"""The SmolLM2 RAG teacher and its small llama student: the LLM demo's and benchmarks' recipe.

`build_smollm2_rag_teacher` puts SmolLM2-135M-Instruct (or any keras-hub
llama causal LM with a ChatML tokenizer) under a RAG-Token model with rank-8
LoRA; `build_smollm2_rag_student` builds the student of issue 18 on top of
a teacher: `build_llama_student` (the teacher's tokenizer, 1/8 of its
weights, its embedding projected on its principal axes and its layers cut
from the teacher's) reading one passage. `keras_ragkd.demo_smollm2`,
`benchmarks/llm_rag_bench.py` and `benchmarks/llm_distill_bench.py` share
these settings.
"""

import keras
import tensorflow as tf

from keras_ragkd.distillation import Distiller
from keras_ragkd.distillation.losses import ForwardKL
from keras_ragkd.models import load_smollm2
from keras_ragkd.models.llama_student import build_llama_student
from keras_ragkd.rag.causal_lm_preprocessor import CausalLMRagPreprocessor
from keras_ragkd.rag.causal_lm_task import build_causal_lm_rag_question_answerer
from keras_ragkd.rag.copy_head import CopyHead
from keras_ragkd.training_budget import warmup_cosine

# The teacher: what the prompt needs (90 % of the countryinfo passages fit in
# 48 tokens), rank-8 LoRA, Adam 2e-3, batches of 8; answers tokenised with a
# leading space, as their words stand in a passage (`ĠLu anda`, not `L u anda`),
# so that a copying student can produce their first token.
TEACHER = dict(num_docs=2, lora_rank=8, question_length=24, passage_length=48, answer_length=12,
               learning_rate=2e-3, batch_size=8, doc_score_scale=10.0, answer_leading_space=True)
# The `TEACHER` settings its `CausalLMRagPreprocessor` takes.
PREPROCESSOR_SETTINGS = ("question_length", "passage_length", "answer_length",
                         "answer_leading_space")
# The student: 1/8 of SmolLM2's weights at most (embedding included), the
# teacher's head size (64) so that `layer_init="teacher"` can cut its heads,
# and a `CopyHead` (keys of 64) to answer with spans of the passage
# (`copy_coverage`: the head's coverage penalty; `copy_gate_supervision`:
# the weight of its switch loss, see `CopyHead`; `copy_from_question`:
# whether it may copy the question's tokens too: on, passage-only scored lower).
STUDENT = dict(num_docs=1, hidden_dim=256, num_layers=4, num_query_heads=4,
               num_key_value_heads=2, intermediate_dim=1024, layer_init="teacher",
               copy_head_dim=64, copy_coverage=True, copy_gate_supervision=1.0,
               copy_from_question=True)
# How the student learns: the teacher's top-64 RAG-Token marginals (+ tail)
# at T = 1, forward KL beside the answer tokens' cross-entropy (α = 0.5), the
# teacher's mistakes masked; Adam 2e-3 with a warm-up and cosine decay.
DISTILLATION = dict(alpha=0.5, temperature=1.0, top_k=64, learning_rate=2e-3, batch_size=16)


def smollm2_rag_preprocessor(causal_lm, user_template=None):
    """A `CausalLMRagPreprocessor` with the teacher's settings on `causal_lm`'s tokenizer.

    The teacher's lengths and `answer_leading_space` (a student distilled
    from its cache must tokenise answers the same way: it shares this
    preprocessor).

    Args:
        causal_lm: a keras-hub causal LM whose preprocessor's tokenizer has the
            ChatML tokens (`load_smollm2()`).
        user_template: optional user-turn template with `{passage}` and
            `{question}` (default: the preprocessor's).

    Returns:
        A `CausalLMRagPreprocessor`.

    Example:

    >>> import keras_hub
    >>> from keras_ragkd.models import Llama3CausalLMPreprocessor
    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf, smollm2_gguf_path
    >>> tokenizer = llama3_tokenizer_from_gguf(smollm2_gguf_path())
    >>> backbone = keras_hub.models.Llama3Backbone(
    ...     vocabulary_size=tokenizer.vocabulary_size(), num_layers=1, num_query_heads=1,
    ...     num_key_value_heads=1, hidden_dim=8, intermediate_dim=8)
    >>> causal_lm = keras_hub.models.Llama3CausalLM(
    ...     backbone, Llama3CausalLMPreprocessor(tokenizer))
    >>> preprocessor = smollm2_rag_preprocessor(causal_lm)
    >>> preprocessor.passage_length == TEACHER["passage_length"]
    True
    >>> preprocessor.get_config()["answer_leading_space"]
    True
    """
    settings = {k: TEACHER[k] for k in PREPROCESSOR_SETTINGS}
    if user_template:
        settings["user_template"] = user_template
    return CausalLMRagPreprocessor(causal_lm.preprocessor.tokenizer, **settings)


def build_smollm2_rag_teacher(index, encoder, causal_lm=None, dtype="float32"):
    """The SmolLM2 RAG teacher before training: LoRA enabled (B = 0, so zero-shot).

    Args:
        index: the `PassageIndex` (MiniLM) it retrieves from.
        encoder: the MiniLM query encoder (frozen).
        causal_lm: a keras-hub llama causal LM (`load_smollm2()`, loaded here
            with 128-token sequences if `None`).
        dtype: `"float32"` or `"mixed_bfloat16"` (bfloat16 compute), for the
            model loaded here.

    Returns:
        A compiled `CausalLMRagQuestionAnswerer` (Adam, RAG-Token loss) over
        `TEACHER["num_docs"]` passages, in-graph search (`backend="tensor"`).
    """
    causal_lm = causal_lm or load_smollm2(dtype=dtype, sequence_length=128)
    model = build_causal_lm_rag_question_answerer(
        index, encoder, smollm2_rag_preprocessor(causal_lm), causal_lm,
        num_docs=TEACHER["num_docs"], backend="tensor",
        doc_score_scale=TEACHER["doc_score_scale"], lora_rank=TEACHER["lora_rank"],
    )
    model.compile(optimizer=keras.optimizers.Adam(TEACHER["learning_rate"]))
    return model


def build_smollm2_rag_student(teacher, index, encoder, seed=0, **overrides):
    """A small llama RAG student of `teacher`, with the teacher's preprocessor.

    Args:
        teacher: a `CausalLMRagQuestionAnswerer` with a llama generator (its
            backbone is what the student's layers are cut from).
        index: the `PassageIndex` the student retrieves from.
        encoder: the query encoder of `index`.
        seed: int, the seed of the student's random weights.
        **overrides: settings of `STUDENT` to change (`hidden_dim=128`, ...).

    Returns:
        An uncompiled `CausalLMRagQuestionAnswerer` over `num_docs` passages.
    """
    unknown = sorted(set(overrides) - set(STUDENT))
    if unknown:
        raise ValueError(f"Student settings must be among {sorted(STUDENT)}. "
                         f"Received: overrides={unknown}")
    settings = dict(STUDENT, **overrides)
    backbone = build_llama_student(
        teacher.rag.generator.backbone, hidden_dim=settings["hidden_dim"],
        num_layers=settings["num_layers"], num_query_heads=settings["num_query_heads"],
        num_key_value_heads=settings["num_key_value_heads"],
        intermediate_dim=settings["intermediate_dim"], layer_init=settings["layer_init"],
        seed=seed)
    return build_causal_lm_rag_question_answerer(
        index, encoder, teacher.preprocessor, backbone, num_docs=settings["num_docs"],
        copy_head_dim=student_copy_head(settings),
        copy_from_question=settings["copy_from_question"])


def student_copy_head(settings=STUDENT):
    """The student's `CopyHead` of `settings` (`STUDENT`'s keys), or `None`.

    Args:
        settings: dict with `copy_head_dim` (0 or `None`: no head),
            `copy_coverage` and `copy_gate_supervision`.

    Example:

    >>> student_copy_head().key_dim, student_copy_head(dict(STUDENT, copy_head_dim=0))
    (64, None)
    """
    if not settings["copy_head_dim"]:
        return None
    return CopyHead(key_dim=settings["copy_head_dim"], coverage=settings["copy_coverage"],
                    gate_supervision=settings["copy_gate_supervision"], name="copy_head")


def cache_batches(model, questions, batch_size=DISTILLATION["batch_size"]):
    """Preprocessed full batches of `(question, answer)` pairs in a fixed order.

    The order a `TeacherCache` is built in and attached to; a last partial
    batch is dropped, so every step sees one shape.

    Args:
        model: a RAG question answerer (its `preprocessor` is mapped over).
        questions: list of question dicts (`"question"`, `"answer"`).
        batch_size: int.

    Returns:
        A cached `tf.data.Dataset` of preprocessed `(x, y)` batches.
    """
    questions = list(questions)
    if len(questions) < batch_size:
        raise ValueError(f"Expected at least one batch of {batch_size} questions. "
                         f"Received: questions of length {len(questions)}")
    questions = questions[: len(questions) // batch_size * batch_size]
    pairs = tf.data.Dataset.from_tensor_slices(
        ([q["question"] for q in questions], [q["answer"] for q in questions]))
    return pairs.batch(batch_size).map(model.preprocessor).cache()


def compile_student_distiller(student, steps, distillation_loss=None, **settings):
    """A compiled `Distiller` for `student` trained from a cache (no live teacher).

    Args:
        student: the student `CausalLMRagQuestionAnswerer`.
        steps: int, the training steps (the learning-rate schedule's length).
        distillation_loss: a distillation loss object (default `ForwardKL()`).
        **settings: entries of `DISTILLATION` to change (`alpha`,
            `temperature`, `learning_rate`).

    Returns:
        A `Distiller` compiled with Adam (`warmup_cosine`) and the answer
        tokens' cross-entropy (padding ignored), the teacher's mistakes masked.
    """
    unknown = sorted(set(settings) - set(DISTILLATION))
    if unknown:
        raise ValueError(f"Distillation settings must be among {sorted(DISTILLATION)}. "
                         f"Received: settings={unknown}")
    settings = dict(DISTILLATION, **settings)
    pad = student.preprocessor.padding_id
    distiller = Distiller(None, student, alpha=settings["alpha"],
                          temperature=settings["temperature"], ignore_class=pad,
                          mask_teacher_errors=True,
                          distillation_loss=distillation_loss or ForwardKL())
    distiller.compile(
        optimizer=keras.optimizers.Adam(warmup_cosine(settings["learning_rate"], steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=pad))
    return distiller
