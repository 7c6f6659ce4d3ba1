"""The llama.cpp backend: GGUF models through llama-cpp-python's thin wrappers.

We drive llama.cpp with its low-level objects (model, context, batch, native
sampler chain) rather than the high-level ``Llama`` class because ``Llama``
compiles every chat template at load (a template with an unknown tag then breaks
``tokenize`` and ``perplexity`` too), copies logits into numpy on every token and
re-detokenizes text. Our loop decodes one token, samples natively and hands the
id to ``textstream.drive``; the KV cache is kept between calls and only the
part of a new prompt that differs from what is already cached is evaluated.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmcli.backends.base import (BackendInfo, GenerationStats, SamplingParams, SharedTextMethods, StreamEvent,
                                  common_prefix_len)
from llmcli.backends.hardware import physical_cores
from llmcli.backends.sampling import NgramBlocker
from llmcli.backends.textstream import drive
from llmcli.chat_template import ChatTemplate
from llmcli.errors import BackendError, ModelError

# llama.cpp's default penalty window; the torch backend uses the same one.
PENALTY_LAST_N = 64


@functools.lru_cache(maxsize=1)
def amx_repack_unsafe() -> bool:
    """Whether to keep llama.cpp from repacking weights into "extra" CPU buffers (AMX, repack).

    On Intel CPUs with AMX (Sapphire Rapids and later) a natively built llama.cpp repacks
    quantized weights for its AMX kernel, which segfaults in ``ggml_backend_amx_mul_mat``
    (ggml-org/llama.cpp#20824, seen here with SmolLM2 Q4_1 as soon as a prompt is a few dozen
    tokens). Without the extra buffers the ordinary AVX512 kernels run. ``LLMCLI_AMX=1`` opts
    back in for builds where the bug is fixed.
    """
    import llama_cpp

    if os.environ.get("LLMCLI_AMX") == "1":
        return False
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def model_params(llama_cpp):
    """llama.cpp's default model parameters with the AMX workaround applied."""
    params = llama_cpp.llama_model_default_params()
    if amx_repack_unsafe():
        params.use_extra_bufts = False
    return params


class LlamaCppBackend(SharedTextMethods):
    name = "llama.cpp"

    def __init__(self, path: Path | str, *, ctx_cap: int | None = None, threads: int | None = None,
                 gpu_layers: int = 0, batch: int = 512, verbose: bool = False, reason: str = ""):
        import llama_cpp
        from llama_cpp import _internals, _logger

        self._ll = llama_cpp
        _logger.set_verbose(verbose)
        self.path = Path(path)
        mparams = model_params(llama_cpp)
        mparams.use_mmap = True
        mparams.n_gpu_layers = gpu_layers
        try:
            self._model = _internals.LlamaModel(path_model=str(self.path), params=mparams, verbose=verbose)
        except ValueError:
            raise ModelError(f"llama.cpp could not load {self.path}: the file is truncated, corrupt, or its "
                             "architecture is not supported by this llama.cpp build",
                             "re-download the model, or run with -v to see llama.cpp's log") from None
        self._vocab = self._model.vocab
        self.n_ctx_train = self._model.n_ctx_train()
        n_ctx = self.n_ctx_train if self.n_ctx_train > 0 else 4096
        if ctx_cap:
            n_ctx = min(n_ctx, ctx_cap)
        self.threads = threads or physical_cores()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(batch, n_ctx)
        cparams.n_ubatch = min(batch, n_ctx)
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        # On CPU, flash attention makes a token's keys/values depend on how the prompt was split into
        # batches, so a reused prefix would not give the bits a fresh run gives (measured: logits off by
        # up to 0.8). Without it, any split into batches of >= 2 tokens is bit-identical, for ~10 % of
        # prompt-processing speed on CPU (docs/performance.md). GPU offload keeps llama.cpp's `auto`.
        cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if gpu_layers
                                   else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=verbose)
        except ValueError:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens",
                               "try a smaller --ctx") from None
        self.n_ctx = self._ctx.n_ctx()
        self.n_batch = cparams.n_batch
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=verbose)
        self.n_vocab = self._model.n_vocab()
        self.metadata = self._model.metadata()
        self._cached: list[int] = []  # ids whose keys/values are in the KV cache, in order
        # Length of the prefix of _cached that was evaluated as prompt, in batches of >= 2 tokens: only
        # that part is reused, so a reply never depends on what the cache held before (generated tokens
        # are decoded one at a time, and a lone token's keys/values differ in the last bits).
        self._exact = 0
        self._piece_buf = ctypes.create_string_buffer(256)
        self._internals = _internals
        bos = self._model.token_bos()
        self.bos_id = bos if bos >= 0 else None
        self.add_bos = bool(self._model.add_bos_token())
        gpu = "GPU offload of %d layers" % gpu_layers if gpu_layers else "CPU"
        self.info = BackendInfo("llama.cpp", gpu, _quant_name(self.metadata), reason or "GGUF model")

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:  # cannot happen with len+8 slots for BPE/SPM, but be safe
            cap = -n
            buf = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise BackendError("llama.cpp failed to tokenize the text")
        return list(buf[:n])

    def _piece(self, token: int, special: bool) -> bytes:
        n = self._ll.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            self._piece_buf = ctypes.create_string_buffer(-n + 1)
            n = self._ll.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        return self._piece_buf.raw[: max(n, 0)]

    def is_end(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))

    # --- chat template ------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(self.metadata.get("tokenizer.chat_template"))

    def _template(self) -> ChatTemplate:
        tpl = getattr(self, "_tpl", None)
        if tpl is None:
            source = self.metadata.get("tokenizer.chat_template")
            if not source:
                raise ModelError("this model has no chat template", "use --raw to send the text as is")
            bos = self._model.token_get_text(self.bos_id) if self.bos_id is not None else ""
            eos_id = self._model.token_eos()
            eos = self._model.token_get_text(eos_id) if eos_id >= 0 else ""
            tpl = self._tpl = ChatTemplate(source, bos_token=bos, eos_token=eos)
        return tpl

    # --- evaluation ---------------------------------------------------------------------------
    def _chunks(self, n: int) -> Iterator[tuple[int, int]]:
        """(start, size) of the batches for n tokens: at most n_batch each, and never a lone last
        token unless n == 1 (a batch of one token computes slightly different keys/values)."""
        i = 0
        while i < n:
            size = min(self.n_batch, n - i)
            if n - i - size == 1 and size > 2:
                size -= 1
            yield i, size
            i += size

    def _decode(self, ids: Sequence[int], *, all_logits: bool = False):
        """Append ``ids`` to the KV cache; yields each batch's size after decoding it."""
        for i, size in self._chunks(len(ids)):
            chunk = ids[i:i + size]
            self._batch.set_batch(chunk, len(self._cached), all_logits)
            try:
                self._ctx.decode(self._batch)
            except RuntimeError as e:
                self._forget_from(len(self._cached))
                raise BackendError(f"llama.cpp failed to evaluate the prompt ({e})") from None
            self._cached.extend(chunk)
            yield len(chunk)

    def _forget_from(self, pos: int) -> None:
        self._ctx.kv_cache_seq_rm(-1, pos, -1)
        del self._cached[pos:]
        self._exact = min(self._exact, pos)

    def reset(self) -> None:
        """Drop the whole KV cache (chat: /clear)."""
        self._forget_from(0)

    def _sampler(self, params: SamplingParams, seed: int, history: Sequence[int]):
        s = self._internals.LlamaSampler()
        if params.repeat_penalty != 1.0:
            s.add_penalties(self.n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0)
            for t in history[-PENALTY_LAST_N:]:
                self._ll.llama_sampler_accept(s.sampler, t)
        blocker = None
        if params.no_repeat_ngram_size:
            blocker = NgramBlocker(params.no_repeat_ngram_size, history)
            s.add_custom(_ban_tokens(blocker))
        if params.greedy:
            s.add_greedy()
        else:
            s.add_top_k(params.top_k)
            s.add_top_p(params.top_p, 1)
            s.add_min_p(params.min_p, 1)
            s.add_temp(params.temperature)
            s.add_dist(seed)
        return s, blocker

    def _raw_ids(self, prompt_ids: list[int], params: SamplingParams, seed: int,
                 stats: GenerationStats) -> Iterator[int]:
        keep = self._reusable(prompt_ids)
        self._forget_from(keep)
        stats.prompt_tokens_processed = len(prompt_ids) - keep
        for _ in self._decode(prompt_ids[keep:]):
            pass
        self._exact = len(prompt_ids)
        sampler, blocker = self._sampler(params, seed, prompt_ids)
        try:
            sample = self._ll.llama_sampler_sample
            while True:
                tok = sample(sampler.sampler, self._ctx.ctx, -1)
                yield tok
                if len(self._cached) >= self.n_ctx:
                    return
                if blocker is not None:
                    blocker.append(tok)
                for _ in self._decode([tok]):
                    pass
        finally:
            sampler.close()

    def _reusable(self, ids: Sequence[int]) -> int:
        """How many leading ids can keep their cached keys/values. At least two tokens are evaluated
        again (fresh logits for the last one, and no lone-token batch), so the result is bit-identical
        to evaluating ``ids`` from an empty cache."""
        keep = min(common_prefix_len(self._cached, ids), self._exact)
        return min(keep, max(len(ids) - 2, 0))

    def prefill(self, ids: Sequence[int]) -> int:
        """Evaluate ``ids`` into the KV cache without generating, so that a later prompt starting with
        them evaluates only what follows. Chat calls it with the conversation including the reply just
        generated, while the user types the next message. Returns how many tokens were evaluated."""
        ids = list(ids)
        if len(ids) < 2 or len(ids) >= self.n_ctx:
            return 0
        self._check_ids(ids)
        if min(common_prefix_len(self._cached, ids), self._exact) >= len(ids):
            return 0
        keep = self._reusable(ids)
        self._forget_from(keep)
        for _ in self._decode(ids[keep:]):
            pass
        self._exact = len(ids)
        return len(ids) - keep

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[StreamEvent]:
        if not prompt_ids:
            raise ModelError("the prompt is empty after tokenization")
        if len(prompt_ids) >= self.n_ctx:
            raise ModelError(f"the prompt is {len(prompt_ids)} tokens but the context window is {self.n_ctx}",
                             "shorten the input or raise --ctx (up to the model's "
                             f"{self.n_ctx_train})")
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        stats = GenerationStats(prompt_tokens=len(prompt_ids), seed=seed)
        return drive(self._raw_ids(list(prompt_ids), params, seed, stats), piece=lambda t: self._piece(t, False),
                     is_end=self.is_end, params=params, stats=stats)

    def logprobs(self, ids: list[int]) -> list[float]:
        """log p(ids[i] | ids[:i]) for i >= 1, one forward pass over the window."""
        import numpy as np

        if len(ids) > self.n_ctx:
            raise ModelError(f"{len(ids)} tokens do not fit the context window of {self.n_ctx}")
        self._check_ids(ids)
        self._forget_from(0)
        out: list[float] = []
        pos = 0
        for n in self._decode(ids, all_logits=True):
            logits = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(n, self.n_vocab)).astype(np.float64)
            m = logits.max(axis=1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))
            for r in range(n):
                j = pos + r + 1
                if j < len(ids):
                    out.append(float(logits[r, ids[j]] - lse[r]))
            pos += n
        # Logits for every position were requested: the cached state is still valid for reuse.
        self._exact = len(ids) if len(ids) >= 2 else 0
        return out

    def close(self) -> None:
        for obj in ("_batch", "_ctx", "_model"):
            o = getattr(self, obj, None)
            if o is not None:
                o.close()
                setattr(self, obj, None)


def _ban_tokens(blocker: NgramBlocker):
    neg_inf = -math.inf

    def apply(cur_p) -> None:
        banned = blocker.banned()
        if not banned:
            return
        arr = cur_p.contents
        data = arr.data
        size = arr.size
        for b in banned:
            # First in the chain, candidates are still in vocabulary order (index == id).
            if b < size and data[b].id == b:
                data[b].logit = neg_inf
            else:
                for i in range(size):
                    if data[i].id == b:
                        data[i].logit = neg_inf
                        break

    return apply


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def _quant_name(metadata: dict) -> str:
    try:
        return _FILE_TYPES.get(int(metadata.get("general.file_type", "")), "gguf")
    except ValueError:
        return "gguf"
