"""Render a model's own chat template, always inside jinja2's sandbox.

Templates come from model files, so they are untrusted code: the immutable
sandbox blocks attribute access to Python internals and mutation of our objects.
Compilation is lazy (first use), so a template with an unknown tag cannot break
loading a model for ``tokenize`` or ``perplexity``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property

from llmcli.errors import ModelError, UsageError

# How families expose a reasoning switch: a boolean (Qwen3 and others: enable_thinking; DeepSeek V3.1:
# thinking) or an effort level (gpt-oss: reasoning_effort).
SWITCH_VARIABLES = ("enable_thinking", "thinking")
EFFORT_VARIABLE = "reasoning_effort"
EFFORTS = ("low", "medium", "high")


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @cached_property
    def _env(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # HF templates rely on trim_blocks/lstrip_blocks and loopcontrols (transformers does the same).
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        return env

    @cached_property
    def _compiled(self):
        from jinja2.exceptions import TemplateError

        try:
            return self._env.from_string(self.source)
        except TemplateError as e:
            raise ModelError(f"the model's chat template does not compile: {e}",
                             "use --raw to send text without the template") from None

    @cached_property
    def variables(self) -> frozenset[str]:
        """The names the template reads from its context (jinja2's own analysis of the source)."""
        from jinja2 import meta
        from jinja2.exceptions import TemplateError

        try:
            return frozenset(meta.find_undeclared_variables(self._env.parse(self.source)))
        except TemplateError as e:
            raise ModelError(f"the model's chat template does not compile: {e}",
                             "use --raw to send text without the template") from None

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
        from jinja2.exceptions import SecurityError, TemplateError

        msgs = [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in messages]
        try:
            return self._compiled.render(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except SecurityError as e:
            raise ModelError(f"the model's chat template tried an unsafe operation: {e}",
                             "use --raw to send text without the template") from None
        except TemplateError as e:
            raise ModelError(f"the model's chat template failed: {e}",
                             "use --raw to send text without the template") from None


def _tojson(value, indent=None, ensure_ascii=False, **_):
    import json

    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
