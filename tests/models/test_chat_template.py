import pytest
import tensorflow as tf

from keras_ragkd.models import ChatTemplate
from keras_ragkd.models import gguf_chat_template

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_smollm2_template_is_read_from_the_file_metadata(smollm2_checkpoint):
    template = gguf_chat_template(smollm2_checkpoint)
    assert template.system_prompt == SMOLLM2_SYSTEM
    assert template("Hi") == (
        f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template("Hi", system_prompt="") == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_messages_follow_the_jinja_rules():
    # What SmolLM2's Jinja template renders (the default system turn only
    # when the conversation has none; the generation prompt at the end).
    template = ChatTemplate(system_prompt="S")
    assert template.format_messages([{"role": "user", "content": "Q"}]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    conversation = [
        {"role": "system", "content": "Own"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    assert template.format_messages(conversation, add_generation_prompt=False) == (
        "<|im_start|>system\nOwn<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
    )


def test_batches_and_string_tensors_format_alike():
    template = ChatTemplate()
    questions = ["What is the capital of France?", "Capital of Peru?"]
    in_graph = tf.function(template)(tf.constant(questions))
    assert [p.decode() for p in in_graph.numpy()] == template(questions)


def test_non_chatml_templates_and_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="Only ChatML"):
        ChatTemplate.from_jinja("{{ bos_token }}[INST] {{ message }} [/INST]")
    assert ChatTemplate.from_jinja(None).system_prompt is None
    with pytest.raises(ValueError, match="Received: user_message=3"):
        ChatTemplate()(3)
    with pytest.raises(ValueError, match="Received: message="):
        ChatTemplate().format_messages([{"role": "user"}])
