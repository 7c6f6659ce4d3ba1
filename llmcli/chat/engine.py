"""A conversation bound to a loaded backend: turns, context fitting, prefix reuse,
undo/retry, autosave. No terminal here: the REPL hands in a sink for the streamed text
and a ``notify`` function for messages meant for stderr.

Prefix reuse: every turn renders the whole (fitted) conversation with the model's chat
template and tokenizes it; the backend evaluates only the ids after the prefix it already
holds. After a reply, ``prefill`` (when the backend's capabilities say it has one) evaluates the reply as part of
the prompt prefix — in a background thread while the user types — so the next turn
processes only the new message and the reply is bit-identical to what a fresh process
given the same conversation produces (llama.cpp computes the keys/values of a token
decoded alone slightly differently from the same token inside a prompt batch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmcli.attachments import Attachment, compose, overflow_error
from llmcli.backends.base import Message, Prompt
from llmcli.chat import sessions
from llmcli.chat.conversation import Conversation
from llmcli.chat.fitting import Overflow, fit, reply_reserve
from llmcli.errors import LlmcliError, ModelError, UsageError
from llmcli.streaming import Reply, run_stream, think_filter_for


class ContextOverflowError(UsageError):
    """A message that cannot fit the context window even with all history dropped."""

    def __init__(self, message: str, hint: str | None = None, tokens: int = 0):
        super().__init__(message, hint)
        self.tokens = tokens


@dataclass
class TurnResult:
    reply: Reply
    dropped: int  # exchanges dropped from the window before this turn
    prompt_tokens: int


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class ChatSession:
    def __init__(self, backend, conv: Conversation, *, autosaver: sessions.Autosaver | None = None,
                 notify: Callable[[str], None] | None = None, background_prefill: bool = False,
                 model_loader: Callable[[str], tuple[str, str, object]] | None = None,
                 on_turn: Callable[["ChatSession", TurnResult], None] | None = None):
        self.backend = backend
        self.conv = conv
        self.autosaver = autosaver or sessions.Autosaver(None, enabled=False)
        self.notify = notify or (lambda _msg: None)
        self.background_prefill = background_prefill
        self.model_loader = model_loader
        self.on_turn = on_turn  # the run log: called after each reply, must not raise
        self.last: Reply | None = None
        self.last_prompt_tokens = 0
        self._prefill_thread: threading.Thread | None = None
        self.prefill_error: BaseException | None = None
        self.prefilled_tokens = 0
        self.attached: list[Attachment] = []  # files for the next message (-f, /file)

    # --- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        self.autosaver.save(self.conv)

    # --- prompt construction -------------------------------------------------------------------
    def _ids(self, start: int | None = None, *, generation: bool = True) -> list[int]:
        msgs = self.conv.model_messages(start)
        if not msgs:
            return []
        return self.backend.chat_ids(msgs, add_generation_prompt=generation, reasoning=self.conv.params.reasoning)

    @property
    def reserve(self) -> int:
        return reply_reserve(self.conv.params.max_tokens, self.backend.n_ctx)

    def prepare(self) -> tuple[Prompt, int]:
        """(the prompt, exchanges dropped now) for the pending message. A backend that cannot count
        a conversation's tokens (a server without a tokenizer endpoint) gets it whole: the server
        says when it no longer fits."""
        conv, n_ctx = self.conv, self.backend.n_ctx
        if not self.backend.capabilities.count_chat:
            return self.backend.encode(messages=conv.model_messages(), reasoning=conv.params.reasoning), 0
        reserve = self.reserve
        try:
            f = fit(conv.exchanges, conv.context_start, lambda s: len(self._ids(s)), n_ctx=n_ctx, reserve=reserve)
        except Overflow as e:
            raise ContextOverflowError(
                f"the message does not fit the context window: the system prompt and the message take {e.tokens} "
                f"tokens and {reserve} more are kept for the reply, but the window is {n_ctx} tokens",
                "shorten the message, lower max_tokens (/set max_tokens N) or start with a larger --ctx",
                tokens=e.tokens) from None
        if f.dropped:
            conv.context_start = f.start
            kept = conv.exchanges - f.start
            self.notify(f"context window full: dropped the {_plural(f.dropped, 'oldest exchange')} "
                        f"({kept} kept, {f.tokens} of {n_ctx} tokens used)")
        return self.backend.encode(messages=conv.model_messages(), reasoning=conv.params.reasoning), f.dropped

    # --- attached files ------------------------------------------------------------------------
    def attach(self, files: list[Attachment]) -> None:
        self.attached.extend(files)

    def attached_lines(self) -> list[str]:
        if not self.attached:
            return ["no files attached (/file PATH attaches one to the next message)"]
        return [f"{a.name}  {self.file_tokens(a)} tokens" for a in self.attached] + [
            "they go with the next message"]

    def file_tokens(self, a: Attachment) -> int:
        return len(self.backend.tokenize(a.block(), add_special=False, parse_special=False))

    # --- turns ---------------------------------------------------------------------------------
    def send(self, text: str, sink) -> TurnResult:
        """Add a user message and stream the reply into ``sink``. On an error (or Ctrl-C) before the
        reply started the message is dropped again; Ctrl-C during the reply keeps the partial reply."""
        self.wait_prefill()
        if self.conv.pending:
            self.conv.drop_pending()
            self.notify("dropped the earlier message that had no reply")
        files = self.attached
        self.conv.add_user(compose(files, None, text) if files else text)
        self.save()  # a process killed during the reply keeps the message
        try:
            result = self._generate(sink)
        except BaseException as e:
            if self.conv.pending:
                self.conv.drop_pending()
                self.save()
            if files and isinstance(e, ContextOverflowError):
                # The files stay attached; the error says which are large.
                raise overflow_error(files, e.tokens, self.backend.n_ctx, lambda t: len(self.backend.tokenize(
                    t, add_special=False, parse_special=False)), reserve=self.reserve) from None
            raise
        self.attached = []
        return result

    def retry(self, sink) -> TurnResult:
        """Generate the last reply again (the next seed in the retry sequence)."""
        self.wait_prefill()
        conv = self.conv
        if not conv.messages:
            raise UsageError("nothing to retry yet", "send a message first")
        previous = None if conv.pending else conv.messages[-1]
        conv.retry()
        try:
            return self._generate(sink)
        except BaseException:
            if previous is not None and conv.pending:
                conv.messages.append(previous)
                conv.next_attempt = 0
            raise

    def _generate(self, sink) -> TurnResult:
        conv = self.conv
        prompt, dropped = self.prepare()
        seed = conv.reply_seed()
        params = conv.params.replace(seed=seed, n=1)
        reply = run_stream(self.backend, prompt, params, sink, think_filter_for(prompt.text))
        answer = reply.text.lstrip("\n") if reply.thinking else reply.text
        # A reply cut off by a broken stream is kept like an interrupted one (/retry redoes it).
        conv.add_reply(answer, thinking=reply.thinking, interrupted=reply.interrupted or reply.error is not None,
                       seed=seed)
        self.last = reply
        self.last_prompt_tokens = len(prompt.ids) or reply.stats.prompt_tokens
        self.save()
        if reply.error is not None:
            raise reply.error
        result = TurnResult(reply, dropped, self.last_prompt_tokens)
        if self.on_turn is not None:
            self.on_turn(self, result)
        self.schedule_prefill()
        return result

    # --- background prefill --------------------------------------------------------------------
    def schedule_prefill(self) -> None:
        backend = self.backend
        if not backend.capabilities.prefill or self.conv.pending:
            return
        ids = self._ids(generation=False)
        if len(ids) < 2 or len(ids) + self.reserve >= self.backend.n_ctx:
            return

        def work() -> None:
            try:
                self.prefilled_tokens = backend.prefill(ids)
            except BaseException as e:  # noqa: BLE001 - an optimisation must never break the chat
                self.prefill_error = e

        if self.background_prefill:
            self._prefill_thread = threading.Thread(target=work, name="llmcli-prefill", daemon=True)
            self._prefill_thread.start()
        else:
            work()

    def wait_prefill(self) -> None:
        """Block until a background prefill is done. Ctrl-C while waiting is delivered afterwards,
        so the backend is never used by two threads at once."""
        t = self._prefill_thread
        if t is None:
            return
        interrupted = False
        while t.is_alive():
            try:
                t.join(0.05)
            except KeyboardInterrupt:
                interrupted = True
        self._prefill_thread = None
        if interrupted:
            raise KeyboardInterrupt

    # --- commands that change the conversation -------------------------------------------------
    def undo(self) -> bool:
        self.wait_prefill()
        done = self.conv.undo()
        if done:
            self.save()
        return done

    def set_system(self, text: str | None) -> None:
        self.wait_prefill()
        self.conv.set_system(text)
        self.save()

    def set_param(self, name: str, value: str) -> None:
        before = self.conv.params
        self.conv.set_param(name, value)
        try:
            check_reasoning(self.backend, self.conv.params.reasoning)
        except LlmcliError:
            self.conv.params = before  # "/set reasoning off" on a template without the switch
            raise
        self.save()

    def clear(self, new_autosave_path: Path | None = None) -> None:
        """A new conversation with the same model, system prompt and parameters. The old one stays
        saved; autosave moves to ``new_autosave_path``."""
        self.wait_prefill()
        self.conv.clear()
        self.last = None
        self.last_prompt_tokens = 0
        if new_autosave_path is not None:
            self.autosaver.retarget(new_autosave_path)

    def replace_conversation(self, conv: Conversation, autosave_path: Path | None) -> None:
        self.wait_prefill()
        conv.model, conv.model_path = self.conv.model, self.conv.model_path
        self.conv = conv
        self.last = None
        self.last_prompt_tokens = 0
        if autosave_path is not None:
            self.autosaver.retarget(autosave_path)
        self.save()

    def switch_model(self, name: str) -> str:
        if self.model_loader is None:
            raise UsageError("switching models is not available here")
        self.wait_prefill()
        display, path, backend = self.model_loader(name)
        if not backend.has_chat_template:
            backend.close()
            raise ModelError(f"{display} has no chat template", "chat needs an instruct (chat) model")
        old = self.backend
        self.backend = backend
        try:
            old.close()
        except Exception:  # noqa: BLE001
            pass
        self.conv.model, self.conv.model_path = display, path
        self.last = None
        self.save()
        return display

    def close(self) -> None:
        try:
            self.wait_prefill()
        except KeyboardInterrupt:
            pass
        self.backend.close()

    # --- reports -------------------------------------------------------------------------------
    def context_used(self) -> int:
        """Tokens the conversation (as sent to the model, without a new message) takes now."""
        self.wait_prefill()
        return len(self._ids(generation=False))

    def stats_lines(self) -> list[str]:
        n_ctx = self.backend.n_ctx
        used = self.context_used()
        lines = [f"context: {used} / {n_ctx} tokens ({100 * used / n_ctx:.0f}%), "
                 f"{self.conv.exchanges - self.conv.context_start} exchange(s) in the window"]
        r = self.last
        if r is None:
            lines.append("last reply: none yet in this process")
            return lines
        s = r.stats
        lines.append(f"last reply: {s.generated_tokens} tokens, {s.generation_tokens_per_second:.1f} tok/s, "
                     f"finish: {s.finish_reason}")
        if s.finish_reason == "interrupted":
            lines.append(f"time to first token: {s.time_to_first_token * 1000:.0f} ms")
        else:
            reused = s.prompt_tokens - s.prompt_tokens_processed
            lines.append(f"time to first token: {s.time_to_first_token * 1000:.0f} ms; prompt: {s.prompt_tokens} "
                         f"tokens, {s.prompt_tokens_processed} processed ({reused} reused from the cache), "
                         f"{s.prompt_tokens_per_second:.1f} tok/s")
        lines.append(f"seed: {s.seed}")
        return lines

    def context_lines(self) -> list[str]:
        conv, n_ctx = self.conv, self.backend.n_ctx
        used = self.context_used()
        reserve = self.reserve
        kept = conv.exchanges - conv.context_start
        lines = [f"context: {used} / {n_ctx} tokens used; {reserve} kept free for each reply; about "
                 f"{max(n_ctx - reserve - used, 0)} left for the next message",
                 f"window: {_plural(kept, 'exchange')}" + (f" ({conv.context_start} older ones dropped)"
                                                          if conv.context_start else "")]
        if conv.system:
            lines.append("the system prompt is never dropped")
        if kept > 0:
            start = conv.context_start
            size = len(self._ids(start, generation=False)) - len(self._ids(start + 1, generation=False))
            first = " ".join(conv.messages[2 * start].content.split())
            if len(first) > 60:
                first = first[:59] + "…"
            lines.append(f"dropped next when the window is full: exchange {start + 1} ({size} tokens): \"{first}\"")
        else:
            lines.append("nothing to drop: the window holds no exchange yet")
        return lines


def turn_stats_line(reply: Reply) -> str:
    """The per-turn ``--stats`` line (stderr)."""
    s = reply.stats
    if s.finish_reason == "interrupted":  # the backend's prompt figures are lost with the stream
        return (f"generated: {s.generated_tokens} tokens ({s.generation_tokens_per_second:.1f} tok/s) | time to "
                f"first token: {s.time_to_first_token * 1000:.0f} ms | finish: interrupted")
    from llmcli.output import format_stats

    return format_stats(s)


def check_chat_model(backend, display: str) -> None:
    if not backend.has_chat_template:
        raise ModelError(f"{display} has no chat template", "llmcli chat needs an instruct (chat) model; "
                         "use llmcli generate --raw for a base model")


def check_reasoning(backend, mode: str | None) -> None:
    """A reasoning mode the model's template cannot express fails now, not at the next message."""
    if mode is not None:
        backend.chat_prompt([Message("user", "")], reasoning=mode)


__all__ = ["ChatSession", "ContextOverflowError", "TurnResult", "check_chat_model", "turn_stats_line",
           "LlmcliError"]
