"""The llama.cpp backend: GGUF models through llama-cpp-python's thin wrappers.

We drive llama.cpp with its low-level objects (model, context, batch, native
sampler chain) rather than the high-level ``Llama`` class because ``Llama``
compiles every chat template at load (a template with an unknown tag then breaks
``tokenize`` and ``perplexity`` too), copies logits into numpy on every token and
re-detokenizes text. This module supplies only llama.cpp's native steps (decode ids
into the KV cache, cut it back, sample with the native chain, a token's bytes); the
generation loop, prefix reuse and stream semantics are ``core.LocalBackend``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import math
import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmcli.backends.base import BackendInfo, Constraint, SamplingParams
from llmcli.backends.core import LocalBackend, common_prefix_len
from llmcli.backends.hardware import physical_cores
from llmcli.backends.sampling import PENALTY_LAST_N, NgramBlocker
from llmcli.errors import BackendError, ModelError, UsageError
from llmcli.params import PARALLEL_MAX



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


class LlamaCppBackend(LocalBackend):
    name = "llama.cpp"
    # Only the part of the cache evaluated as prompt batches is reused, and the last two prompt ids
    # are always evaluated again (fresh logits): a reply never depends on what the cache held before.
    MIN_FRESH = 2
    REUSE_DECODED = False
    # On CPU, flash attention is on (llama.cpp's `auto`; faster), and with it a token's keys/values
    # depend on which batch it was evaluated in (measured: logits off by up to 0.42 for the same
    # prompt split at another place). So on CPU every prompt batch is an aligned unit of ALIGN
    # absolute positions ([0, 64), [64, 128), …, the last one cut at the prompt's end) and the cache
    # is reused only up to a multiple of ALIGN: a fresh run and a reusing run then evaluate the same
    # positions in the same batches, bit for bit. The price: up to ALIGN - 1 tokens evaluated again
    # per chat turn, and prompt batches of ALIGN tokens (docs/performance.md has the numbers).
    ALIGN = 64
    # --n: the samples run in one ParallelDecoder, the prompt evaluated once (llamacpp_parallel)
    capabilities = dataclasses.replace(LocalBackend.capabilities, parallel=PARALLEL_MAX, samples_together=True)

    def __init__(self, path: Path | str, *, ctx_cap: int | None = None, threads: int | None = None,
                 gpu_layers: int = 0, batch: int = 512, verbose: bool = False, reason: str = "",
                 lora: Path | None = None):
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
        self._align = 0 if gpu_layers else self.ALIGN
        if self._align:
            batch = self._align
        cparams.n_batch = min(batch, n_ctx)
        cparams.n_ubatch = min(batch, n_ctx)
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        # llama.cpp's own default (flash attention where the device supports it); on CPU made exact
        # for prefix reuse by the aligned batches (ALIGN).
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=verbose)
        except ValueError:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens",
                               "try a smaller --ctx") from None
        if lora is not None:
            self._apply_lora(Path(lora))
        self.n_ctx = self._ctx.n_ctx()
        self.n_batch = cparams.n_batch
        self._cparams = cparams  # ParallelDecoder (--parallel) makes its own context from these
        self._decoders: weakref.WeakSet = weakref.WeakSet()  # open ParallelDecoders, closed before the model
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=verbose)
        self.n_vocab = self._model.n_vocab()
        self.metadata = self._model.metadata()
        self._cached: list[int] = []  # ids whose keys/values are in the KV cache, in order
        self._piece_buf = ctypes.create_string_buffer(256)
        self._internals = _internals
        bos = self._model.token_bos()
        self.bos_id = bos if bos >= 0 else None
        self.add_bos = bool(self._model.add_bos_token())
        gpu = "GPU offload of %d layers" % gpu_layers if gpu_layers else "CPU"
        self.info = BackendInfo("llama.cpp", gpu, _quant_name(self.metadata), reason or "GGUF model")

    def _apply_lora(self, path: Path) -> None:
        """A GGUF LoRA adapter at scale 1 on this context (llama.cpp frees it with the model)."""
        ll = self._ll
        if not path.is_file():
            raise ModelError(f"the GGUF LoRA adapter {path} is missing",
                             "train the adapter again, or use --backend torch")
        adapter = ll.llama_adapter_lora_init(self._model.model, str(path).encode())
        if not adapter:
            raise ModelError(f"llama.cpp could not load the LoRA adapter {path} for {self.path.name}",
                             "the adapter was trained for another base model; run with -v to see llama.cpp's log")
        adapters = (ll.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if ll.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales) != 0:
            raise BackendError(f"llama.cpp could not apply the LoRA adapter {path}")

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
    def _template_source(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template") or None

    def _template_specials(self) -> tuple[str, str]:
        bos = self._model.token_get_text(self.bos_id) if self.bos_id is not None else ""
        eos_id = self._model.token_eos()
        return bos, (self._model.token_get_text(eos_id) if eos_id >= 0 else "")

    # --- evaluation ---------------------------------------------------------------------------
    def _chunks(self, n: int, at: int | None = None) -> Iterator[tuple[int, int]]:
        """(start, size) of the batches for n tokens appended at position ``at`` (default: the end of
        the cache). On CPU: the aligned units (ALIGN). Otherwise at most n_batch each, and never a
        lone last token unless n == 1 (a batch of one token computes slightly different keys/values)."""
        i = 0
        if self._align:
            at = len(self._cached) if at is None else at
            while i < n:
                size = min(self._align - (at + i) % self._align, n - i)
                yield i, size
                i += size
            return
        while i < n:
            size = min(self.n_batch, n - i)
            if n - i - size == 1 and size > 2:
                size -= 1
            yield i, size
            i += size

    def _decode(self, ids: Sequence[int], *, all_logits: bool = False):
        """Append ``ids`` to the KV cache; yields each batch's size after decoding it."""
        for i, size in self._chunks(len(ids)):
            self._step(ids[i:i + size], all_logits)
            yield size

    def _evaluate(self, ids: Sequence[int]) -> None:
        for _ in self._decode(ids):
            pass

    def _reusable(self, ids: Sequence[int]) -> int:
        return self._aligned(super()._reusable(ids))

    def shareable(self, held: Sequence[int], ids: Sequence[int]) -> int:
        """How many leading ids of prompt ``ids`` can take their keys/values from another sequence
        whose prompt ``held`` was evaluated (--parallel): what this cache would reuse of it."""
        return self._aligned(min(common_prefix_len(held, ids), max(len(ids) - self.MIN_FRESH, 0)))

    def _aligned(self, keep: int) -> int:
        return keep - keep % self._align if self._align else keep

    def _step(self, ids, all_logits: bool = False) -> None:
        """Decode one batch (one generated id in the hot loop) at the end of the cache."""
        if type(ids) is int:  # noqa: E721
            # The hot path writes the one row itself: set_batch's generic loop costs more per token.
            b = self._batch.batch
            b.n_tokens, b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = 1, ids, len(self._cached), 1, True
            b.seq_id[0][0] = 0
            ids = (ids,)
        else:
            self._batch.set_batch(ids, len(self._cached), all_logits)
        rc = self._ll.llama_decode(self._ctx.ctx, self._batch.batch)
        if rc != 0:
            self._truncate(len(self._cached))  # drop what the failed batch left in the cache
            raise BackendError(f"llama.cpp failed to evaluate the tokens (llama_decode returned {rc})")
        self._cached.extend(ids)

    def _truncate(self, keep: int) -> None:
        self._ctx.kv_cache_seq_rm(-1, keep, -1)
        del self._cached[keep:]

    def reset(self) -> None:
        """Drop the whole KV cache (chat: /clear)."""
        self._truncate(0)

    def _sampler(self, params: SamplingParams, seed: int, history: Sequence[int], ctx=None) -> _NativeSampler:
        """The native chain; ``ctx``: the context whose logits it reads (--parallel's own, else ours)."""
        ctx = ctx if ctx is not None else self._ctx.ctx
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
        grammar = self.compiled(params.constraint)
        if grammar is not None:
            from llmcli.backends.llamacpp_grammar import GrammarSampler

            return GrammarSampler(self._ll, s, self._grammar_sampler(grammar), ctx, self.n_vocab, blocker)
        return _NativeSampler(self._ll.llama_sampler_sample, s, ctx, blocker)

    def _compile(self, constraint: Constraint) -> bytes:
        """The GBNF text for llama.cpp's grammar sampler, checked by parsing it once. llama.cpp's parser
        writes its complaint straight to file descriptor 2: it is caught and becomes our one error line."""
        if constraint.kind == "json_schema":
            from llmcli.backends.grammar_gbnf import to_gbnf

            text = to_gbnf(constraint.text)
        else:
            text = constraint.text
        grammar = text.encode("utf-8")
        with _captured_stderr() as said:
            sampler = self._ll.llama_sampler_init_grammar(self._vocab, grammar, b"root")
        if not sampler:
            why = next((line.split("error parsing grammar:")[-1].strip() for line in said()
                        if line.strip()), "") or "a syntax error, an undefined rule, or no rule named root"
            raise UsageError(f"llama.cpp cannot use {constraint.flag} {constraint.source}: {why}",
                             "fix the grammar (GBNF, https://github.com/ggml-org/llama.cpp/blob/master/grammars)"
                             if constraint.kind == "gbnf" else "simplify the schema")
        self._ll.llama_sampler_free(sampler)
        return grammar

    def _grammar_sampler(self, grammar: bytes):
        """A grammar sampler for one stream (the grammar parsed before, in ``_compile``)."""
        sampler = self._ll.llama_sampler_init_grammar(self._vocab, grammar, b"root")
        if not sampler:
            raise BackendError("llama.cpp could not build the grammar sampler")
        return sampler

    def _logprobs(self, ids: list[int]) -> list[float]:
        """One forward pass over the window, logits of every position."""
        import numpy as np

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
        return out

    def decoder(self, n: int):
        """A ParallelDecoder for ``n`` sequences at once on this model (its own context)."""
        from llmcli.backends.llamacpp_parallel import ParallelDecoder

        decoder = ParallelDecoder(self, n)
        self._decoders.add(decoder)
        return decoder

    def close(self) -> None:
        for decoder in list(self._decoders):  # their contexts use the model: freed before it
            decoder.close()
        self._decoders.clear()
        for obj in ("_batch", "_ctx", "_model"):
            o = getattr(self, obj, None)
            if o is not None:
                o.close()
                setattr(self, obj, None)


class _NativeSampler:
    """llama.cpp's sampler chain for one stream; the logits live in the context."""

    __slots__ = ("_sample", "_chain", "_ctx", "_blocker", "idx")

    def __init__(self, sample, chain, ctx, blocker: NgramBlocker | None):
        self._sample, self._chain, self._ctx, self._blocker = sample, chain, ctx, blocker
        self.idx = -1  # which row of the last batch holds this sequence's logits (--parallel)

    def pick(self, _state) -> int:
        return self._sample(self._chain.sampler, self._ctx, self.idx)

    def accept(self, token: int) -> None:
        if self._blocker is not None:
            self._blocker.append(token)

    def close(self) -> None:
        self._chain.close()


@contextlib.contextmanager
def _captured_stderr():
    """File descriptor 2 redirected to a temporary file for the block; yields a function giving the
    lines written there."""
    import tempfile

    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read(65536).decode("utf-8", "replace").splitlines())


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
