"""The torch backend: transformers models on cuda / mps / cpu, behind the same interface as
llama.cpp.

- HF folders load from safetensors (pickle weights only with ``--allow-pickle``; model code
  from the folder only with ``--trust-remote-code``). A GGUF is converted once into such a
  folder and cached (``gguf_convert``).
- Our own decoding loop, not ``model.generate``: one forward per token through the decoder
  with ``logits_to_keep=1``, a KV cache that is pre-allocated and grows in place (no
  ``torch.cat`` per token), token selection on the device (``torch_sampling``) and one host
  sync per token (the chosen id). It runs in the caller's thread, so Ctrl-C stops it
  between tokens.
- Llama-architecture models decode through ``torch_lean``'s step (fused projections, ≈25 ops
  a layer instead of ≈70); prompts and other models go through transformers' forward.
- The KV cache and the ids it holds survive between calls: a new prompt only evaluates the
  suffix after the common prefix (chat turns, ``--n``).
- ``--compile``: a static KV cache and ``torch.compile`` of the one-token step
  (CUDA graphs via ``mode="reduce-overhead"`` on CUDA), where the model supports it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from llmcli.backends.base import BackendInfo, Constraint, SamplingParams
from llmcli.backends.core import LocalBackend
from llmcli.backends.torch_cache import cache_kwarg, growing_layer_class
from llmcli.backends.torch_checks import check_architecture, check_hf_folder, read_config
from llmcli.backends.torch_env import parse_device, parse_dtype, quiet_transformers, resolve_device, resolve_dtype
from llmcli.errors import BackendError, ModelError
from llmcli.params import PARALLEL_MAX

PREFILL_CHUNK = 512  # prompt tokens per forward (bounds activation and logits memory)
# Special tokens llama.cpp treats as end-of-generation by their text (src/llama-vocab.cpp):
# end-of-turn tokens, and the FIM pad/repo/file-separator tokens.
EOG_TEXTS = frozenset({"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                       "<EOT>", "<|end_of_text|>", "<end_of_utterance>", "<|return|>", "<|call|>",
                       "<|fim_pad|>", "<fim-pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                       "<REPO>", "<reponame>", "<|file_sep|>"})
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _merged_adapter(model, folder: Path):
    """The model with a peft LoRA adapter folded into its weights: the same outputs as peft's
    adapter layers, at the base model's speed (and the lean decode step still applies)."""
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside peft
            return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise ModelError(f"the LoRA adapter in {folder} does not fit this model: {type(e).__name__}: {e}",
                         "train the adapter again on this base model") from None


# --- the backend -----------------------------------------------------------------------------------

class TorchBackend(LocalBackend):
    name = "torch"

    def __init__(self, ref, opts, *, reason: str = "", notify=None, facts=None, loaded=None,
                 lean: bool = True):
        """``loaded``: (model, tokenizer) already built (the GPU benchmark's randomly initialised
        models); ``ref`` then only names them."""
        notify = notify or _stderr
        path = Path(ref.path)
        device_req = parse_device(opts.device)
        dtype_req = parse_dtype(opts.dtype)
        self.verbose = opts.verbose
        pickle = False
        config_dict = None
        if ref.format == "gguf" or loaded is not None:
            folder = None
        else:
            folder = path
            pickle = check_hf_folder(folder, allow_pickle=opts.allow_pickle) == "pickle"
            config_dict = read_config(folder)

        import torch
        import transformers

        from llmcli.backends.hardware import physical_cores
        from llmcli.backends.torch_env import torch_facts

        self._torch = torch
        if config_dict is not None:
            self._check_arch(config_dict, opts.trust_remote_code, transformers)
        facts = facts or torch_facts()
        device, device_why = resolve_device(device_req, facts)
        dtype_name, dtype_why = resolve_dtype(dtype_req, device, facts)
        self.threads = opts.threads or physical_cores()
        torch.set_num_threads(self.threads)
        if folder is None and loaded is None:
            from llmcli.backends.gguf_convert import ensure_converted
            from llmcli.config import cache_dir

            folder = ensure_converted(path, cache_dir(), notify=notify, quiet_libs=not opts.library_logs)
            config_dict = read_config(folder)
            self._check_arch(config_dict, False, transformers)
        self.folder = folder or path
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype_name)
        if loaded is not None:
            model, tok = loaded
            model.to(self.dtype)
            attn = getattr(model.config, "_attn_implementation", None)
        else:
            model, tok, attn = self._load(folder, bool(opts.trust_remote_code), pickle, opts.library_logs,
                                          transformers)
        if isinstance(tok, bool) or not hasattr(tok, "convert_ids_to_tokens"):
            raise ModelError(f"no usable tokenizer in {folder}")
        try:
            model.to(self.device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            raise BackendError(f"the model does not fit on {device}: {e}", "try --device cpu or a smaller model") \
                from None
        adapter = getattr(ref, "adapter", None)
        if adapter is not None:
            model = _merged_adapter(model, Path(adapter))
        model.eval()
        self.model = model
        self._tok = tok
        self.config = model.config
        text_config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") \
            else model.config
        self.n_ctx_train = next((int(v) for k in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
                                 if isinstance(v := getattr(text_config, k, None), int) and v > 0), 2048)
        self.n_ctx = min(self.n_ctx_train, opts.ctx) if opts.ctx else self.n_ctx_train
        self.n_vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() \
            is not None else int(text_config.vocab_size)

        self._init_tokens()
        self._cache_kwarg = cache_kwarg(model)
        self._cached: list[int] = []
        self._cache = None
        self._static = False
        self._compiled_step = None
        compile_note = ""
        if opts.compile:
            if getattr(model, "_can_compile_fullgraph", False):
                self._static = True
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
                self._compiled_step = torch.compile(model.forward, mode=mode, fullgraph=True)
                compile_note = f"; static KV cache + torch.compile ({mode})"
            else:
                compile_note = "; --compile ignored: this model does not support a static cache"
        self._lean = None
        self._lean_cache = False  # whether the current cache's layers are all ones the lean step can fill
        if not self._static and lean:
            from llmcli.backends.torch_lean import LeanLlamaStep, lean_step_supported

            if lean_step_supported(model):
                self._lean = LeanLlamaStep(model, self.n_ctx)
                compile_note += "; decode: lean Llama step (fused q/k/v and gate/up)"
                # --parallel and --n batch the lean step's rows (torch_parallel); other models decode one
                # sequence at a time
                self.capabilities = dataclasses.replace(self.capabilities, parallel=PARALLEL_MAX,
                                                        samples_together=True)
        attn_used = getattr(model.config, "_attn_implementation", attn) or "default"
        self.info = BackendInfo(
            "torch", str(self.device), dtype_name,
            f"{reason or 'torch backend'}; device: {device_why}; dtype: {dtype_why}; attention: {attn_used}"
            f"{compile_note}")

    # --- loading helpers ---------------------------------------------------------------------------
    def _load(self, folder: Path, trust: bool, pickle: bool, library_logs: bool, transformers):
        """(model, tokenizer, attention implementation) from an HF folder."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        with quiet_transformers(not library_logs):
            try:
                config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust)
            except (ValueError, KeyError, OSError) as e:
                raise ModelError(f"transformers cannot read the config of {folder}: {e}") from None
            attn = self._attention(config, transformers)
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(folder), config=config, dtype=self.dtype, trust_remote_code=trust,
                    use_safetensors=not pickle, attn_implementation=attn)
            except (ValueError, KeyError, OSError, RuntimeError) as e:
                raise ModelError(f"transformers could not load {folder}: {type(e).__name__}: {e}") from None
            try:
                tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
            except (ValueError, KeyError, OSError, TypeError) as e:
                raise ModelError(f"no usable tokenizer in {folder}: {e}",
                                 "the folder needs tokenizer.json (or the model's tokenizer files)") from None
        return model, tok, attn

    @staticmethod
    def _check_arch(config_dict: dict, trust: bool, transformers) -> None:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_MASKED_LM_MAPPING_NAMES)

        names: set[str] = set()
        for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
            names.update(v if isinstance(v, (list, tuple)) else [v])
        check_architecture(config_dict, known_types=set(CONFIG_MAPPING.keys()),
                           causal_types=set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), causal_names=names,
                           masked_lm_types=set(MODEL_FOR_MASKED_LM_MAPPING_NAMES), trust_remote_code=trust,
                           transformers_version=transformers.__version__)

    @staticmethod
    def _attention(config, transformers) -> str | None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        try:
            cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        except KeyError:
            return None  # remote code: let transformers pick
        return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"

    def _init_tokens(self) -> None:
        tok = self._tok
        self.bos_id = tok.bos_token_id
        with_special = tok("a", add_special_tokens=True)["input_ids"]
        without = tok("a", add_special_tokens=False)["input_ids"]
        self.add_bos = (self.bos_id is not None and len(with_special) > len(without)
                        and with_special[0] == self.bos_id)
        added = getattr(tok, "added_tokens_decoder", {}) or {}
        self._special = {i: t.content for i, t in added.items() if getattr(t, "special", False)}
        self._added_plain = {i: t.content for i, t in added.items() if not getattr(t, "special", False)}
        ends: set[int] = set()
        gen_cfg = getattr(self.model, "generation_config", None)
        for value in (getattr(gen_cfg, "eos_token_id", None), getattr(self.config, "eos_token_id", None),
                      tok.eos_token_id):
            if isinstance(value, int):
                ends.add(value)
            elif isinstance(value, (list, tuple)):
                ends.update(v for v in value if isinstance(v, int))
        ends.update(i for i, text in self._special.items() if text in EOG_TEXTS)
        self._ends = frozenset(ends)
        from tokenizers import decoders

        backend = getattr(tok, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        if isinstance(decoder, decoders.ByteLevel):
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self._byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
            self._piece_mode = "bytelevel"
        elif tok.convert_tokens_to_ids("<0x0A>") not in (None, tok.unk_token_id):
            self._piece_mode = "sentencepiece"
        else:
            self._piece_mode = "decode"
        self._pieces: dict[int, bytes] = {}

    # --- tokens ------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return list(self._tok(text, add_special_tokens=add_special, split_special_tokens=not parse_special)
                    ["input_ids"])

    def _piece(self, token: int, special: bool) -> bytes:
        """The bytes a token stands for; special tokens are empty unless ``special``."""
        if token in self._special:
            return self._special[token].encode("utf-8") if special else b""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        if token in self._added_plain:
            out = self._added_plain[token].encode("utf-8")
        else:
            text = self._tok.convert_ids_to_tokens(token)
            if text is None:
                out = b""
            elif self._piece_mode == "bytelevel":
                dec = self._byte_decoder
                out = bytes(dec[c] for c in text) if all(c in dec for c in text) else text.encode("utf-8")
            elif self._piece_mode == "sentencepiece":
                m = _BYTE_TOKEN.match(text)
                out = bytes([int(m.group(1), 16)]) if m else text.replace("\u2581", " ").encode("utf-8")
            else:
                out = self._tok.decode([token], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False).encode("utf-8")
        self._pieces[token] = out
        return out

    def is_end(self, token: int) -> bool:
        return token in self._ends

    # --- chat template -----------------------------------------------------------------------------
    def _template_source(self) -> str | None:
        src = getattr(self._tok, "chat_template", None)
        if isinstance(src, dict):
            src = src.get("default") or next(iter(src.values()), None)
        return src or None

    def _template_specials(self) -> tuple[str, str]:
        return self._tok.bos_token or "", self._tok.eos_token or ""

    # --- the KV cache ------------------------------------------------------------------------------
    def _new_cache(self):
        from transformers import DynamicCache, StaticCache

        if self._static:
            return StaticCache(config=self.config, max_cache_len=self.n_ctx)
        cache = DynamicCache(config=self.config)
        from transformers.cache_utils import DynamicLayer

        growing = growing_layer_class()
        cache.layers = [growing() if type(layer) is DynamicLayer else layer for layer in cache.layers]
        self._lean_cache = self._lean is not None and len(cache.layers) == len(self._lean.layers) and all(
            type(layer) is growing for layer in cache.layers)
        return cache

    def _truncate(self, keep: int) -> None:
        """Keep the first ``keep`` cached positions, drop the rest."""
        if self._cache is None:
            self._cache = self._new_cache()
            self._cached = []
            return
        if keep >= len(self._cached):
            return
        from transformers.cache_utils import StaticLayer

        growing = growing_layer_class()
        layers = getattr(self._cache, "layers", [])
        if keep > 0 and layers and all(type(layer) in (growing, StaticLayer) for layer in layers):
            for layer in layers:
                if type(layer) is StaticLayer:
                    if layer.is_initialized:
                        layer.cumulative_length.fill_(keep)
                else:
                    layer.truncate(keep)
            del self._cached[keep:]
            return
        # Sliding-window and other layer types cannot be cut back: start over.
        if self._static:
            self._cache.reset()
        else:
            self._cache = self._new_cache()
        self._cached = []

    def reset(self) -> None:
        """Forget the cached prefix (chat: /clear)."""
        self._cache = None
        self._cached = []

    def _forward(self, ids: Sequence[int], *, all_logits: bool = False, step: bool = False):
        """Append ``ids`` to the KV cache; the logits of the last position (or of all)."""
        torch = self._torch
        start = len(self._cached)
        try:
            with torch.inference_mode():
                if step and self._lean_cache and len(ids) == 1:
                    logits = self._lean(ids[0], start, self._cache)
                else:
                    logits = self._transformers_forward(ids, start, all_logits=all_logits, step=step)
        except BaseException:
            self.reset()  # a forward cut short leaves the cache inconsistent
            raise
        self._cached.extend(ids)
        return logits

    def _transformers_forward(self, ids: Sequence[int], start: int, *, all_logits: bool, step: bool):
        torch = self._torch
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        pos = torch.arange(start, start + len(ids), dtype=torch.long, device=self.device).unsqueeze(0)
        fn = self._compiled_step if (step and self._compiled_step is not None) else self.model
        out = fn(input_ids=x, position_ids=pos, use_cache=True, logits_to_keep=0 if all_logits else 1,
                 **{self._cache_kwarg: self._cache})
        return out.logits[0] if all_logits else out.logits[0, -1]

    def _evaluate(self, ids: Sequence[int]):
        logits = None
        for i in range(0, len(ids), PREFILL_CHUNK):
            logits = self._forward(ids[i:i + PREFILL_CHUNK])
        return logits

    def _step(self, token: int):
        return self._forward((token,), step=True)

    def _sampler(self, params: SamplingParams, seed: int, history: Sequence[int]):
        from llmcli.backends.torch_sampling import TokenPicker

        mask = None
        grammar = self.compiled(params.constraint)
        if grammar is not None:
            from llmcli.backends.torch_grammar import TokenMask

            mask = TokenMask(self._lltokenizer(), grammar, self.n_vocab)
        return TokenPicker(params, seed, history, device=self.device, mask=mask)

    def _lltokenizer(self):
        if self.__dict__.get("_lltok") is None:
            from llmcli.backends.torch_grammar import tokenizer

            self._lltok = tokenizer(self._tok, self.n_vocab, self._ends)
        return self._lltok

    def _compile(self, constraint: Constraint) -> str:
        from llmcli.backends.torch_grammar import compile_grammar

        return compile_grammar(constraint, self._lltokenizer())

    def _logprobs(self, ids: list[int]) -> list[float]:
        """In chunks of PREFILL_CHUNK positions."""
        torch = self._torch
        out: list[float] = []
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start:start + PREFILL_CHUNK]
            logits = self._forward(chunk, all_logits=True)
            targets = ids[start + 1:start + len(chunk) + 1]
            if not targets:
                break
            with torch.inference_mode():
                lp = torch.log_softmax(logits[: len(targets)].float(), dim=-1)
                t = torch.tensor(targets, dtype=torch.long, device=lp.device).unsqueeze(1)
                out.extend(lp.gather(1, t).squeeze(1).tolist())
        return out

    def decoder(self, n: int):
        """A TorchParallelDecoder for ``n`` sequences at once (``capabilities.parallel`` > 1)."""
        from llmcli.backends.torch_parallel import TorchParallelDecoder

        return TorchParallelDecoder(self, n)

    def close(self) -> None:
        self._cache = None
        self._compiled_step = None
        self._lean = None
        model = getattr(self, "model", None)
        if model is not None:
            self.model = None
            del model
            torch = getattr(self, "_torch", None)
            if torch is not None and self.device.type == "cuda":
                torch.cuda.empty_cache()
