"""A Llama3CausalLMPreprocessor whose `generate()` prompts honour `add_start_token`."""

import keras
import keras_hub
from keras_hub.layers import StartEndPacker


@keras.saving.register_keras_serializable(package="keras_ragkd")
class Llama3CausalLMPreprocessor(keras_hub.models.Llama3CausalLMPreprocessor):
    """keras-hub's `Llama3CausalLMPreprocessor`, with the start token optional.

    keras-hub's `generate_preprocess` prepends the start token to every
    prompt even with `add_start_token=False` (only training batches honour
    the flag). Models trained without one, such as SmolLM2 (GGUF
    `tokenizer.ggml.add_bos_token = false`; its BOS is `<|im_start|>`),
    then see a stray token at the start of every prompt. Here the flag
    holds for both.

    Args:
        tokenizer: a `keras_hub.models.Llama3Tokenizer`.
        sequence_length: int. The padded length of inputs.
        add_start_token: bool. Prepend the tokenizer's start token, in
            training batches and `generate()` prompts alike.
        add_end_token: bool. Append the end token to training examples.

    Example:

    >>> from keras_ragkd.models import Llama3CausalLMPreprocessor
    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf
    >>> from keras_ragkd.models import smollm2_gguf_path
    >>> preprocessor = Llama3CausalLMPreprocessor(
    ...     llama3_tokenizer_from_gguf(smollm2_gguf_path()),
    ...     sequence_length=8, add_start_token=False)
    >>> ids = preprocessor.generate_preprocess(["Paris"])["token_ids"].numpy()
    >>> ids[0, :1].tolist() == [preprocessor.tokenizer.token_to_id("Paris")]
    True
    """

    def build(self, input_shape):
        self.packer = StartEndPacker(
            start_value=(
                self.tokenizer.start_token_id if self.add_start_token else None
            ),
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self.built = True
