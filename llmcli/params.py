"""The one table of sampling and runtime parameters.

Each parameter is declared once, here: its type, range, default, help text, flags, config
key, ``LLMCLI_<NAME>`` variable and whether chat's ``/set`` may change it. The Typer options
(cli/options.py), the config file and environment (config.py), ``/set`` and saved sessions
(chat/conversation.py) and ``SamplingParams`` (backends/base.py) all derive from it, so a new
parameter is one ``Param(...)`` line in ``TABLE``.

Values enter through two doors and nothing else parses them again:
``Param.parse(text, label)`` for text (flags, environment, ``/set``) and
``Param.check(value, label)`` for already-typed values (TOML, JSON, Python callers). Both
return a value of the declared type inside the declared range, or raise a ``UsageError``
that names ``label`` (the flag, the variable, the config key) and the range. Integers are
never truncated and booleans are not numbers; an integer is a fine float.

Every integer that reaches a C API (threads, ctx, top-k, seed, gpu-layers, …) is bounded here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llmcli.errors import UsageError

PARALLEL_MAX = 64  # sequences (or requests) one decoder runs at once: the bound of --parallel and --n together

INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 2  # llama.cpp reserves 0xFFFFFFFF for "pick a random seed"
CTX_MAX = 2**24  # 16M tokens: beyond any trained window; keeps n_ctx far from int32 overflow
CTX_MIN = 256  # llama.cpp rounds a smaller window up to 256, so a smaller --ctx would be silently changed
THREADS_MAX = 1024  # llama.cpp allocates per-thread state: a huge count aborts it (std::bad_alloc)
N_MAX = 1024
NGRAM_MAX = 1024
GPU_LAYERS_MAX = 65536

SAMPLING = "Sampling"
MODEL = "Model"
OUTPUT = "Output"
INPUT = "Input"
REASONING_MODES = ("on", "off", "low", "medium", "high")

_NONE_WORDS = ("none", "null", "off")
_TRUE_WORDS = ("true", "1", "on", "yes")
_FALSE_WORDS = ("false", "0", "off", "no")
_PLAIN = re.compile(r"^[\w.+:-]+$")


def unescape(text: str) -> str:
    r"""``--stop "\n\n"`` means two newlines, as users type it in a shell."""
    return text.replace("\\\\", "\x00").replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").replace(
        "\x00", "\\")


def _shown(value, typed: bool = False) -> str:
    if value is None or isinstance(value, bool) or (typed and isinstance(value, str)):
        text = json.dumps(value, ensure_ascii=False)  # as written in TOML or JSON: true, null, "abc"
        return text if len(text) <= 40 else text[:40] + "…"
    if isinstance(value, str):
        return value if _PLAIN.match(value) and len(value) <= 40 else repr(value[:40] + ("…" if len(value) > 40 else ""))
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def fail(label: str, value, why: str, hint: str | None = None, typed: bool = False) -> UsageError:
    return UsageError(f"invalid {label} {_shown(value, typed)}: {why}", hint)


_BACKENDS = {"auto": "auto", "llama.cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama_cpp": "llama.cpp",
             "llama-cpp": "llama.cpp", "gguf": "llama.cpp", "torch": "torch", "pytorch": "torch",
             "transformers": "torch", "remote": "remote", "openai": "remote", "server": "remote"}
_DTYPES = {"auto": None, "float32": "float32", "fp32": "float32", "f32": "float32", "float16": "float16",
           "fp16": "float16", "f16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:(\d{1,4}))?)$")


def _device(key: str) -> str | None:
    """"cpu" | "cuda" | "cuda:N" | "mps", or None for auto; raises ValueError otherwise."""
    if key == "auto":
        return None
    key = "cuda" if key == "gpu" else key
    m = _DEVICE_RE.match(key)
    if not m:
        raise ValueError
    return f"cuda:{int(m.group(3))}" if m.group(3) else key


@dataclass(frozen=True)
class Param:
    name: str  # Python field, config key and /set name; the flag is --name-with-dashes
    kind: type  # int | float | str | tuple (a list of strings)
    help: str
    default: object = None
    default_text: str | None = None  # what None means, for --help and the docs
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # (lo, hi] instead of [lo, hi]
    also: tuple = ()  # accepted besides [lo, hi], e.g. ctx 0 = the model's full window
    choices: Mapping[str, str | None] | None = None  # spelling -> canonical value
    normalize: Callable[[str], str | None] | None = None  # free-form strings (device)
    choices_text: str = ""
    nullable: bool = False  # None is a value: auto, or for sampling rows "none" in /set and null in a session
    short: str | None = None
    section: str = "sampling"  # config table: "sampling", or "general" for top-level keys
    settable: bool = True  # chat's /set
    in_config: bool = True
    panel: str = SAMPLING
    metavar: str | None = None
    range_note: str = ""  # what the ends of the range mean
    cli: bool = True  # a command-line flag; False: config file and environment only
    escapes: bool = False  # a list's items take \\n and \\t escapes (--stop), not file paths

    # --- names -------------------------------------------------------------------------------
    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.short, self.flag) if self.short else (self.flag,)

    @property
    def env(self) -> str:
        return "LLMCLI_" + self.name.upper()

    # --- texts -------------------------------------------------------------------------------
    @property
    def range_text(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is tuple:
            return "a list of non-empty strings"
        if self.choices is not None or self.normalize is not None:
            return f"one of {self.choices_text}" if self.choices_text else "a non-empty string"
        if self.kind is str:
            return "a non-empty string"
        noun = "an integer" if self.kind is int else "a number"
        also = "".join(f"{a} or " for a in self.also)
        if self.lo is not None and self.hi is not None:
            if self.kind is int:
                return f"{also}{noun} in {self.lo}..{self.hi}"
            return f"{also}{noun} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{also}{'an integer' if self.kind is int else 'a finite number'} " \
                   f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return "an integer" if self.kind is int else "a finite number"

    @property
    def default_shown(self) -> str:
        if self.default_text is not None:
            return self.default_text
        return "none" if self.default in (None, ()) else str(self.default)

    def help_text(self, help: str | None = None) -> str:
        free_text = self.kind is tuple or (self.kind is str and self.choices is None and self.normalize is None)
        limits = "" if free_text else f"; {self.range_text}"
        return f"{help or self.help} [default: {self.default_shown}{limits}]"

    # --- values ------------------------------------------------------------------------------
    def check(self, value, label: str):
        """An already-typed value (TOML, JSON, Python) -> the canonical value, or a UsageError."""
        if value is None:
            if self.nullable:
                return None
            raise fail(label, value, f"must be {self.range_text}", typed=True)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise fail(label, value, f"must be {self.range_text}", typed=True)
            return value
        if self.kind is tuple:
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise fail(label, value, f"must be {self.range_text}", typed=True)
            for item in value:
                if not isinstance(item, str) or not item:
                    raise fail(label, item, "must be a non-empty string", typed=True)
            return tuple(value)
        if self.kind is str:
            if not isinstance(value, str):
                raise fail(label, value, f"must be {self.range_text}", typed=True)
            return self._text_choice(value, label)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.kind is int and not isinstance(value, int)):
            raise fail(label, value, f"must be {self.range_text}", typed=True)
        if self.kind is float and isinstance(value, int):
            # An integer is a fine float only if it converts exactly (2**53 + 1 would be rounded,
            # 10**400 overflows): a value is never silently changed.
            exact = float(value) if abs(value) <= 2 ** 1023 else None
            if exact is None or exact != value:
                raise fail(label, value, f"must be {self.range_text} (it is too large to be exact)", typed=True)
            value = exact
        if not self.contains(value):
            raise fail(label, value, f"must be {self.range_text}{self.range_note}", typed=True)
        return value

    def parse(self, text: str, label: str):
        """Text (a flag, an environment variable, /set) -> the canonical value, or a UsageError."""
        if not isinstance(text, str):
            return self.check(text, label)
        stripped = text.strip()
        if self.nullable and self.section == "sampling" and stripped.lower() in _NONE_WORDS and not (
                self.choices and stripped.lower() in self.choices):  # "--reasoning off" is a choice
            return None  # "/set seed none", LLMCLI_MAX_TOKENS=none
        if self.kind is bool:
            word = stripped.lower()
            if word in _TRUE_WORDS or word in _FALSE_WORDS:
                return word in _TRUE_WORDS
            raise fail(label, text, f"must be {self.range_text} (or 1/0, on/off, yes/no)")
        if self.kind is tuple:
            if stripped.lower() in _NONE_WORDS:
                return ()
            if stripped.startswith("["):
                try:
                    value = json.loads(stripped)
                except (ValueError, RecursionError):
                    raise fail(label, text, "not a JSON list of strings", 'write ["\\n\\n", "User:"]') from None
                return self.check(value, label)
            return self.check((unescape(text) if self.escapes else text,), label)
        if self.kind is str:
            return self._text_choice(text, label)
        try:
            # int("1.5") and float("abc") fail; int() never truncates text
            value = int(stripped) if self.kind is int else float(stripped)
        except ValueError:
            raise fail(label, text, f"must be {self.range_text}") from None
        if self.kind is float and not math.isfinite(value):
            raise fail(label, text, f"must be {self.range_text}")
        return self.check(value, label)

    def contains(self, value) -> bool:
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def _text_choice(self, text: str, label: str):
        key = text.strip()
        if self.choices is not None:
            key = key.lower()
            if key in self.choices:
                return self.choices[key]
        elif self.normalize is not None:
            try:
                return self.normalize(key.lower())
            except ValueError:
                pass
        elif key:
            return text
        raise fail(label, text, f"must be {self.range_text}")


TABLE: tuple[Param, ...] = (
    # --- sampling ([sampling] in the config file; /set in chat) --------------------------------
    Param("max_tokens", int, "Stop after this many generated tokens.", nullable=True, lo=1, hi=INT32_MAX,
          default_text="until end of text or the window is full"),
    Param("temperature", float, "Sampling temperature; 0 = greedy.", 0.8, lo=0, short="-t", metavar="T"),
    Param("top_k", int, "Keep the k most likely tokens; 0 disables.", 40, lo=0, hi=INT32_MAX),
    Param("top_p", float, "Nucleus sampling mass.", 0.95, lo=0, hi=1, lo_open=True),
    Param("min_p", float, "Drop tokens below min-p × the top probability.", 0.05, lo=0, hi=1),
    Param("repeat_penalty", float, "Penalty for tokens among the last 64; 1 disables.", 1.0, lo=0, lo_open=True),
    Param("no_repeat_ngram_size", int, "Never repeat an n-gram of this size; 0 disables.", 0, lo=0, hi=NGRAM_MAX),
    Param("seed", int, "Random seed for reproducible sampling (sample i uses seed+i).", nullable=True, lo=0,
          hi=SEED_MAX, default_text="random, reported in --json"),
    Param("stop", tuple, "Stop when this string is generated (not printed). Repeatable; \\n and \\t escapes "
          "allowed.", (), metavar="TEXT", escapes=True),
    Param("reasoning", str, "A reasoning model's thinking: on, off, or an effort, passed to its chat template "
          "(enable_thinking, reasoning_effort); an error when the template has no such switch.",
          choices={m: m for m in REASONING_MODES}, choices_text=", ".join(REASONING_MODES), nullable=True,
          default_text="the template's own default", metavar="MODE"),
    Param("reasoning_budget", int, "Close the thinking block after this many thinking tokens (llmcli writes "
          "the closing tag) so the model answers.", nullable=True, lo=0, hi=INT32_MAX,
          default_text="no limit", metavar="N"),
    Param("n", int, "Number of independent samples (on llama.cpp decoded together from one evaluation of the "
          "prompt).", 1, lo=1, hi=N_MAX, short="-n", settable=False,
          in_config=False),
    # --- model and runtime (top-level keys of the config file) ---------------------------------
    Param("model", str, "A .gguf file, an HF-format folder, a name from the store, or an OpenAI-compatible "
          "server: http://HOST:PORT/v1 or 'http://HOST:PORT/v1#MODEL_ID'.", short="-m",
          default_text="the configured default model, else the embedded SmolLM2-135M", section="general",
          settable=False, panel=MODEL, metavar="MODEL"),
    Param("backend", str, "Which backend runs the model.", "auto", choices=_BACKENDS,
          choices_text="auto, llama.cpp, torch, remote", section="general", settable=False, panel=MODEL,
          metavar="NAME"),
    Param("device", str, "Device for the torch backend (and llama.cpp GPU offload).", normalize=_device,
          choices_text="auto, cpu, cuda, cuda:N, mps", default_text="best available", nullable=True,
          section="general", settable=False, panel=MODEL, metavar="DEVICE"),
    Param("dtype", str, "Weight dtype for the torch backend.", choices=_DTYPES, nullable=True,
          choices_text="auto, float32, float16, bfloat16", default_text="auto", section="general",
          settable=False, panel=MODEL, metavar="DTYPE"),
    Param("ctx", int, "Context window cap in tokens; 0 = the model's full window.", 4096, lo=CTX_MIN, hi=CTX_MAX,
          also=(0,), section="general", settable=False, panel=MODEL,
          default_text="4096, or the model's window when smaller",
          range_note=f" (llama.cpp's smallest window is {CTX_MIN} tokens)"),
    Param("threads", int, "CPU threads.", lo=1, hi=THREADS_MAX, default_text="physical cores", nullable=True,
          section="general", settable=False, panel=MODEL),
    Param("gpu_layers", int, "Layers to offload to the GPU (llama.cpp built with GPU support; -1 = all).",
          lo=-1, hi=GPU_LAYERS_MAX, nullable=True, default_text="all when offload is possible",
          section="general", settable=False, panel=MODEL),
    # Never in the config file, a session or --json: LLMCLI_API_KEY / OPENAI_API_KEY are read by the
    # remote backend itself (backends/remote_http.api_key), after this flag.
    Param("api_key", str, "API key for a model served at a URL (else $LLMCLI_API_KEY, else $OPENAI_API_KEY); "
          "never printed or saved.", nullable=True, default_text="none", section="general", settable=False,
          in_config=False, panel=MODEL, metavar="KEY"),
    Param("think", str, "Where a reasoning model's <think> text goes.", choices={"show": "show", "hide": "hide",
          "stderr": "stderr"}, choices_text="show, hide, stderr", nullable=True,
          default_text="stderr when stdout is not a terminal, dimmed otherwise", section="general",
          settable=False, panel=OUTPUT, metavar="MODE"),
    # --- the run log (docs/logs.md): config file and environment only; --no-log is per run ------
    Param("log", bool, "Record every generate sample and chat turn in the run log (llmcli logs).", True, default_text="true",
          section="general", settable=False, panel=OUTPUT, cli=False),
    Param("log_max_mb", float, "Size cap of the run log in MB; the oldest runs are pruned first.", 100.0, lo=0,
          lo_open=True, section="general", settable=False, panel=OUTPUT, cli=False),
    # --- input (flags only) --------------------------------------------------------------------
    Param("file", tuple, "A UTF-8 text file (no NUL bytes) put before the prompt as context, labelled with "
          "its name; - reads stdin. Repeatable; in order.", (), short="-f", section="input", settable=False,
          in_config=False, panel=INPUT, metavar="PATH"),
    # --- structured output (flags only; cli/structured.py reads them into one Constraint) -------
    Param("json_schema", str, "Constrain the output to JSON valid for this JSON schema: a file, or the schema "
          "itself ({...}).", section="input", settable=False, in_config=False, panel=OUTPUT, metavar="FILE|JSON"),
    Param("grammar", str, "Constrain the output to this GBNF grammar file (llama.cpp's format; rule root).",
          section="input", settable=False, in_config=False, panel=OUTPUT, metavar="FILE"),
    Param("parallel", int, "With --each-line: decode this many lines together (llama.cpp, or torch for Llama "
          "models), or keep this many requests in flight (a server); records stay in input order.", 1, lo=1,
          hi=PARALLEL_MAX, section="input", settable=False, in_config=False, panel=INPUT, metavar="N"),
    Param("resume", str, "With --each-line: skip the lines this earlier output file (JSONL) already answers.",
          section="input", settable=False, in_config=False, panel=INPUT, metavar="FILE"),
)
PARAMS: dict[str, Param] = {p.name: p for p in TABLE}
SAMPLING_NAMES = tuple(p.name for p in TABLE if p.section == "sampling")
RUNTIME_NAMES = tuple(p.name for p in TABLE if p.section == "general" and p.cli)
SETTABLE = tuple(p.name for p in TABLE if p.settable)
CONFIG_KEYS = {p.name: p for p in TABLE if p.in_config}
# Keys of a saved conversation's "params": what SamplingParams holds.
SESSION_KEYS = SAMPLING_NAMES


def check_seed_span(seed: int | None, n: int, label: str = "--seed") -> None:
    """Sample i uses seed+i: the last one must still be a valid seed (decided: reject, not wrap)."""
    if seed is not None and seed + n - 1 > SEED_MAX:
        raise UsageError(f"invalid {label} {seed} with --n {n}: sample {n} would use seed {seed + n - 1}, above "
                         f"{SEED_MAX}", f"use a seed of at most {SEED_MAX - n + 1}")


def markdown_table() -> str:
    """The parameter table as docs/usage.md shows it (a test keeps the two identical)."""
    rows = ["| parameter | flag | config key | environment | `/set` | accepts | default |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in TABLE:
        key = "—" if not p.in_config else f"`{p.name}`" if p.section == "general" else f"`[sampling] {p.name}`"
        flags = ", ".join(f"`{f}`" for f in p.flags) if p.cli else "—"
        settable = f"`/set {p.name}`" if p.settable else "—"
        accepts = p.range_text + p.range_note + (" (repeat the flag)" if p.kind is tuple else "")
        env = f"`{p.env}`" if p.in_config else "—"
        rows.append(f"| {p.name} | {flags} | {key} | {env} | {settable} | {accepts} | {p.default_shown} |")
    return "\n".join(rows) + "\n"
