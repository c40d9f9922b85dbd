"""ChatML prompts (`<|im_start|>user ... <|im_end|>`), read from a model's metadata."""

import re

import tensorflow as tf

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# The literal system turn a Jinja template writes when the conversation has
# none, e.g. SmolLM2's "You are a helpful AI assistant named SmolLM, ...".
_DEFAULT_SYSTEM = re.compile(
    re.escape(IM_START) + r"system\n(.*?)" + re.escape(IM_END), re.DOTALL
)


class ChatTemplate:
    """Formats questions as ChatML turns, the chat format of SmolLM2 and Qwen.

    A turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`; a prompt ends with
    the opening of the assistant's turn, `<|im_start|>assistant\\n`, so the
    model writes the answer and then `<|im_end|>`.

    Models ship their format as a Jinja template (GGUF
    `tokenizer.chat_template`, Hugging Face `tokenizer_config.json`).
    Rendering it would execute template code from the file; `from_jinja`
    only recognises ChatML in it and reads the default system prompt, the
    one literal such templates insert when a conversation has no system turn.

    Args:
        system_prompt: str or `None`. The system turn put before every
            conversation that has none; `None` for no system turn.

    Example:

    >>> from keras_ragkd.models import ChatTemplate
    >>> template = ChatTemplate(system_prompt="Answer in one sentence.")
    >>> print(template("What is the capital of France?"))
    <|im_start|>system
    Answer in one sentence.<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant
    <BLANKLINE>
    >>> template(["Hi", "Bye"], system_prompt="")[1]
    '<|im_start|>user\\nBye<|im_end|>\\n<|im_start|>assistant\\n'
    """

    def __init__(self, system_prompt=None):
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(
                "`system_prompt` must be a string or None. "
                f"Received: system_prompt={system_prompt!r}"
            )
        self.system_prompt = system_prompt or None

    @classmethod
    def from_jinja(cls, template):
        """Reads a ChatML template's default system prompt, without rendering it.

        Args:
            template: str or `None`. A Jinja chat template. `None` (a model
                without one) gives plain ChatML with no system turn.

        Returns:
            A `ChatTemplate`.
        """
        if template is None:
            return cls()
        if IM_START not in template or IM_END not in template:
            raise ValueError(
                "Only ChatML chat templates (turns between `<|im_start|>` and "
                "`<|im_end|>`) are understood. Received: "
                f"template={template[:200]!r}"
            )
        match = _DEFAULT_SYSTEM.search(template)
        return cls(system_prompt=match.group(1) if match else None)

    @staticmethod
    def turn(role, content):
        """One ChatML turn: `<|im_start|>{role}\\n{content}<|im_end|>\\n`."""
        return f"{IM_START}{role}\n{content}{IM_END}\n"

    def format_messages(self, messages, add_generation_prompt=True):
        """Formats a conversation, a list of `{"role": ..., "content": ...}`.

        As the usual ChatML Jinja template does: the default system turn
        comes first unless the first message is a system message, and
        `add_generation_prompt` opens the assistant's turn.
        """
        if not messages:
            raise ValueError(
                f"`messages` must not be empty. Received: messages={messages!r}"
            )
        text = ""
        if messages[0].get("role") != "system" and self.system_prompt:
            text += self.turn("system", self.system_prompt)
        for message in messages:
            if set(message) != {"role", "content"}:
                raise ValueError(
                    "Each message must be a dict with the keys 'role' and "
                    f"'content'. Received: message={message!r}"
                )
            text += self.turn(message["role"], message["content"])
        if add_generation_prompt:
            text += f"{IM_START}assistant\n"
        return text

    def __call__(self, user_message, system_prompt=None):
        """Formats one user message (or a batch of them) as a prompt.

        Args:
            user_message: str, list of str, or a string `tf.Tensor` (then
                formatted with TensorFlow ops, so it runs inside `tf.data`
                and exported graphs).
            system_prompt: str or `None`. `None` uses this template's
                default; `""` leaves the system turn out.

        Returns:
            The prompt(s), of the same kind as `user_message`.
        """
        system = self.system_prompt if system_prompt is None else system_prompt
        prefix = self.turn("system", system) if system else ""
        prefix += f"{IM_START}user\n"
        suffix = f"{IM_END}\n{IM_START}assistant\n"
        if isinstance(user_message, str):
            return prefix + user_message + suffix
        if isinstance(user_message, tf.Tensor):
            return tf.strings.join([prefix, user_message, suffix])
        if isinstance(user_message, (list, tuple)) and all(
            isinstance(m, str) for m in user_message
        ):
            return [prefix + m + suffix for m in user_message]
        raise ValueError(
            "`user_message` must be a string, a list of strings or a string "
            f"tensor. Received: user_message={user_message!r}"
        )

    def __repr__(self):
        return f"ChatTemplate(system_prompt={self.system_prompt!r})"
