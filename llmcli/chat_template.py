"""Render a model's own chat template, always inside jinja2's sandbox and within a budget.

Templates come from model files, so they are untrusted code: the immutable sandbox blocks
attribute access to Python internals and mutation of our objects; ``include``/``import``/
``extends`` find no files; and a render has a budget, so a hostile template cannot hang or
exhaust memory:

- time: ``RENDER_SECONDS`` of wall time, enforced by a watchdog timer that raises into the
  rendering thread (no per-line cost; a chat prompt renders in well under a millisecond).
- size: ``MAX_CHARS`` of output, and no value built by an operator, call or filter may be larger.
  Steps that multiply sizes (``"x" * n``, ``n ** m``, ``"%99999999d" % 1``, ``"a".center(n)``,
  ``replace``, ``join``) are checked before they run, since one such step is a single event the
  clock cannot interrupt; others (``a ~ b``, ``a + b``, filter results) grow at most a bounded
  factor per step and are checked after it.

Any failure of the template is one ``ModelError``: "the model's chat template failed: …".
Compilation is lazy (first use), so a template with an unknown tag cannot break loading a
model for ``tokenize`` or ``perplexity``.
"""

from __future__ import annotations

import datetime
import functools
import re
import threading
import time
from collections.abc import Sequence
from functools import cached_property

from llmcli.errors import ModelError, UsageError

# How families expose a reasoning switch: a boolean (Qwen3 and others: enable_thinking; DeepSeek V3.1:
# thinking) or an effort level (gpt-oss: reasoning_effort).
SWITCH_VARIABLES = ("enable_thinking", "thinking")
EFFORT_VARIABLE = "reasoning_effort"
EFFORTS = ("low", "medium", "high")

RENDER_SECONDS = 5.0
MAX_CHARS = 16 * 1024 * 1024
MAX_POWER_BITS = 1 << 20
HINT = "use --raw to send text without the template"
_HUGE_WIDTH = re.compile(r"%[-+ #0]*(\*|\d{7,})")


class BudgetExceeded(Exception):
    """The template went past its time or size budget."""


def _failed(reason: str) -> ModelError:
    return ModelError(f"the model's chat template failed: {reason}", HINT)


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _check_size(n: int) -> None:
    if n > MAX_CHARS:
        raise BudgetExceeded(f"it builds a value of {n:,} items (the limit is {MAX_CHARS:,})")


def _sized(value):
    """Results of calls, filters and ``~`` are checked after the fact (bounded growth per step)."""
    if isinstance(value, (str, list, tuple, dict)):
        _check_size(len(value))
    return value


def _check_args(args, kwargs) -> None:
    """A width/count argument this large can only be an attack (center, ljust, zfill, indent …)."""
    for v in (*args, *kwargs.values()):
        if isinstance(v, int) and not isinstance(v, bool):
            _check_size(v)


def _check_replace(s, old, new, count=None) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        n = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            n = min(n, count)
        _check_size(len(s) + n * max(0, len(new) - len(old)))


def _check_join(sep, items) -> list:
    """Joins multiply the separator by the item count: checked before the (single) allocation."""
    items = list(items)
    if isinstance(sep, str):
        _check_size(len(sep) * max(len(items) - 1, 0))
    return items


def _bounded_filter(name: str, f):
    @functools.wraps(f)  # keeps jinja's pass_context/pass_environment marks
    def wrapper(*args, **kwargs):
        _check_args(args, kwargs)
        plain = [a for a in args if not hasattr(a, "environment")]  # drop eval_ctx / context / environment
        if name == "format" and plain and isinstance(plain[0], str) and _HUGE_WIDTH.search(plain[0]):
            raise BudgetExceeded("a format width is too large")
        if name == "replace":
            _check_replace(*plain[:4])
        if name == "join" and plain:
            sep = plain[1] if len(plain) > 1 else kwargs.get("d", "")
            items = _check_join(sep, plain[0])
            args = tuple(items if a is plain[0] else a for a in args)
        return _sized(f(*args, **kwargs))

    return wrapper


def _environment():
    from jinja2 import BaseLoader
    from jinja2.compiler import CodeGenerator
    from jinja2.exceptions import TemplateNotFound
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class NoFiles(BaseLoader):
        def get_source(self, environment, template):
            raise TemplateNotFound(template)

    class BudgetCodeGenerator(CodeGenerator):
        def visit_Concat(self, node, frame):  # a ~ b: its result is size-checked
            self.write("environment.sized(")
            super().visit_Concat(node, frame)
            self.write(")")

    class BudgetEnvironment(ImmutableSandboxedEnvironment):
        code_generator_class = BudgetCodeGenerator
        # Intercepted operators are also never constant-folded at compile time.
        intercepted_binops = frozenset({"*", "**", "%", "+"})
        sized = staticmethod(_sized)

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        _check_size(len(seq) * max(n, 0))
            elif operator == "+":
                if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                    _check_size(len(left) + len(right))
            elif operator == "**":
                if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                    if abs(left).bit_length() * right > MAX_POWER_BITS:
                        raise BudgetExceeded("it computes a number too large")
            elif isinstance(left, str) and _HUGE_WIDTH.search(left):
                raise BudgetExceeded("a format width is too large")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
            _check_args(args, kwargs)
            owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
            if isinstance(owner, str) and name == "replace":
                _check_replace(owner, *args[:3])
            elif isinstance(owner, str) and name == "join" and args:
                args = (_check_join(owner, args[0]), *args[1:])
            return _sized(super().call(__context, __obj, *args, **kwargs))

    # HF templates rely on trim_blocks/lstrip_blocks and loopcontrols (transformers does the same).
    env = BudgetEnvironment(trim_blocks=True, lstrip_blocks=True, loader=NoFiles(),
                            extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class _Timeout(BaseException):
    """Raised into the rendering thread by the watchdog; a BaseException so that no ``except
    Exception`` inside jinja2 can swallow it."""


@functools.lru_cache(maxsize=1)
def _async_exc():
    """(raise, clear): PyThreadState_SetAsyncExc with an exception class, and with NULL."""
    import ctypes

    api = ctypes.pythonapi
    set_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(("PyThreadState_SetAsyncExc", api))
    clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(("PyThreadState_SetAsyncExc", api))
    return set_exc, clear


class _Watchdog:
    """One daemon thread for every render: raises _Timeout into a thread whose deadline passed
    (CPython's PyThreadState_SetAsyncExc, delivered at its next bytecode). Unlike a trace function
    this costs nothing per template line, and arming it is a dict insert, not a thread start."""

    def __init__(self):
        self.cond = threading.Condition()
        self.armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self.next_token = 0
        self.thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self.cond:
            self.next_token += 1
            self.armed[self.next_token] = (time.monotonic() + seconds, threading.get_ident())
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="llmcli-template-watchdog", daemon=True)
                self.thread.start()
            self.cond.notify()
            return self.next_token

    def disarm(self, token: int) -> None:
        with self.cond:
            if self.armed.pop(token, None) is None:  # it fired: drop the exception if not yet delivered
                _async_exc()[1](threading.get_ident(), None)

    def _run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for token, (deadline, thread) in list(self.armed.items()):
                    if deadline <= now:
                        del self.armed[token]
                        _async_exc()[0](thread, _Timeout)
                soonest = min((d for d, _ in self.armed.values()), default=None)
                self.cond.wait(None if soonest is None else max(soonest - now, 0.001))


_WATCHDOG = _Watchdog()


class _Deadline:
    """``with _Deadline(s):`` the code inside is stopped with _Timeout after ``s`` seconds."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.token = _WATCHDOG.arm(self.seconds)
        return self

    def __exit__(self, *exc):
        _WATCHDOG.disarm(self.token)
        return False


def _timed_out(seconds: float) -> BudgetExceeded:
    return BudgetExceeded(f"rendering took longer than {seconds:g} s (a runaway loop?)")


def _reason(e: BaseException) -> str:
    from jinja2.exceptions import SecurityError, TemplateError, TemplateNotFound

    if isinstance(e, BudgetExceeded):
        return str(e)
    if isinstance(e, TemplateNotFound):
        return f"it tries to load another template ({e.message}), which is not allowed"
    if isinstance(e, SecurityError):
        return f"it tried an unsafe operation: {e}"
    if isinstance(e, TemplateError):
        return str(e) or type(e).__name__
    if isinstance(e, RecursionError):
        return "it recurses too deeply"
    if isinstance(e, MemoryError):
        return "it ran out of memory"
    return f"{type(e).__name__}: {e}"


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @cached_property
    def _compiled(self):
        try:
            with _Deadline(RENDER_SECONDS):
                return _environment().from_string(self.source)
        except _Timeout:
            raise _failed(f"it does not compile: {_reason(_timed_out(RENDER_SECONDS))}") from None
        except Exception as e:  # noqa: BLE001 - any failure of untrusted code is the template's
            raise _failed(f"it does not compile: {_reason(e)}") from None

    @cached_property
    def variables(self) -> frozenset[str]:
        """The names the template reads from its context (jinja2's own analysis of the source)."""
        from jinja2 import meta

        try:
            with _Deadline(RENDER_SECONDS):
                return frozenset(meta.find_undeclared_variables(_environment().parse(self.source)))
        except _Timeout:
            raise _failed(f"it does not compile: {_reason(_timed_out(RENDER_SECONDS))}") from None
        except Exception as e:  # noqa: BLE001 - any failure of untrusted code is the template's
            raise _failed(f"it does not compile: {_reason(e)}") from None

    def reasoning_vars(self, mode: str | None) -> dict:
        """The template variables that give ``--reasoning MODE`` (on, off, low, medium, high; None =
        the template's default), or a UsageError when this template has no such switch."""
        if mode is None:
            return {}
        names = self.variables
        switch = next((v for v in SWITCH_VARIABLES if v in names), None)
        if mode in EFFORTS and EFFORT_VARIABLE in names:
            return {EFFORT_VARIABLE: mode, **({switch: True} if switch else {})}
        if mode in ("on", "off") and switch:
            return {switch: mode == "on"}
        if mode == "on" and EFFORT_VARIABLE in names:
            return {}  # effort-only templates always reason
        has = (f"only {switch} (on/off)" if switch else f"only {EFFORT_VARIABLE} (low/medium/high)"
               if EFFORT_VARIABLE in names else f"no reasoning switch (none of {', '.join(SWITCH_VARIABLES)}, "
               f"{EFFORT_VARIABLE})")
        raise UsageError(f"--reasoning {mode}: the model's chat template has {has}",
                         "drop --reasoning (or /set reasoning none), or use a mode the template supports")

    def render(self, messages: Sequence, *, add_generation_prompt: bool = True, **extra) -> str:
        msgs = [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in messages]
        template = self._compiled
        out: list[str] = []
        size = 0
        try:
            with _Deadline(RENDER_SECONDS):
                for chunk in template.generate(messages=msgs, add_generation_prompt=add_generation_prompt,
                                               bos_token=self.bos_token, eos_token=self.eos_token, **extra):
                    size += len(chunk)
                    if size > MAX_CHARS:
                        raise BudgetExceeded(f"its output is longer than {MAX_CHARS:,} characters")
                    out.append(chunk)
        except _Timeout:
            raise _failed(_reason(_timed_out(RENDER_SECONDS))) from None
        except Exception as e:  # noqa: BLE001 - any failure of untrusted code is the template's
            raise _failed(_reason(e)) from None
        return "".join(out)


def _tojson(value, indent=None, ensure_ascii=False, **_):
    import json

    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
