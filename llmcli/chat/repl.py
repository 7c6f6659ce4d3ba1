"""The chat loops: interactive (prompt_toolkit: line editing, persistent history, multi-line
input) and piped (no terminal: one message per input line, replies on stdout, nothing else).

Both read *messages* with the same rule: a line starting with \"\"\" opens a multi-line
message that ends at a line ending with \"\"\"; a line starting with / is a command, unless
commands are off (``chat --no-commands``, for untrusted input: every message is sent as is).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from llmcli.chat.commands import Action, Command, dispatch, parse
from llmcli.errors import LlmcliError
from llmcli.chat.engine import turn_stats_line
from llmcli.output import OutputError, TextSink, info, print_error, warn

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'

INTERRUPTED_NOTE = "interrupted: the partial reply is kept in the conversation, marked as interrupted " \
                   "(/retry regenerates it, /undo drops it)"


class UnfinishedBlock(EOFError):
    """The input ended inside a \"\"\" block (the block is not sent)."""


def read_message(next_line: Callable[[str], str]) -> str:
    """One message: a line, or a \"\"\" block. ``next_line(prompt)`` raises EOFError at the end
    of input; inside an unfinished block that becomes UnfinishedBlock (the block is not sent)."""
    first = next_line(PROMPT)
    stripped = first.lstrip()
    if not stripped.startswith(FENCE):
        return first
    rest = stripped[len(FENCE):]
    if rest.rstrip().endswith(FENCE) and rest.strip() != "":  # """one line"""
        return rest.rstrip()[: -len(FENCE)].strip("\n")
    parts = [rest] if rest.strip() else []
    while True:
        try:
            line = next_line(CONTINUATION)
        except EOFError:
            raise UnfinishedBlock() from None
        if line.rstrip().endswith(FENCE):
            tail = line.rstrip()[: -len(FENCE)]
            if tail:
                parts.append(tail)
            break
        parts.append(line)
    return "\n".join(parts).strip("\n")


def _turn_sink(think_mode: str, markdown: bool):
    if markdown:
        from llmcli.chat.render import MarkdownSink

        return MarkdownSink(think_mode)
    return TextSink(think_mode)


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        info(line)


# --- interactive -------------------------------------------------------------------------------

def _prompt_session(history_file: Path | None):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    kb = KeyBindings()

    @kb.add("escape", "enter")  # Alt-Enter sends Esc + Enter in most terminals
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    history = InMemoryHistory()
    if history_file is not None:
        try:
            history_file.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(history_file))
        except OSError as e:
            warn(f"input history is not saved: cannot use {history_file} ({e.strerror or e})")
    return PromptSession(history=history, key_bindings=kb, multiline=False, auto_suggest=AutoSuggestFromHistory(),
                         enable_history_search=False, mouse_support=False)


def run_interactive(session, *, think_mode: str = "show", markdown: bool = False, show_stats: bool = False,
                    history_file: Path | None = None, banner: list[str] | None = None,
                    commands: bool = True) -> int:
    """The REPL. Returns the exit status (0: /exit or Ctrl-D)."""
    ps = _prompt_session(history_file)
    _print_lines(banner or [])

    def run_turn(fn) -> None:
        sink = _turn_sink(think_mode, markdown)
        try:
            result = fn(sink)
        except BaseException:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()
            raise
        sink.end()
        reply = result.reply
        if reply.interrupted:
            warn(INTERRUPTED_NOTE)
        if show_stats:
            info(turn_stats_line(reply))
        sys.stdout.write("\n")
        sys.stdout.flush()

    while True:
        try:
            text = read_message(lambda p: ps.prompt(p))
        except KeyboardInterrupt:
            info("(to leave, type /exit or press Ctrl-D)")
            continue
        except EOFError:
            break
        if not text.strip():
            continue
        item = parse(text) if commands else text
        try:
            if isinstance(item, Command):
                outcome = dispatch(item, session)
                _print_lines(outcome.lines)
                if outcome.action is Action.EXIT:
                    break
                if outcome.action is Action.RETRY:
                    run_turn(session.retry)
            else:
                run_turn(lambda sink, t=item: session.send(t, sink))
        except OutputError:
            raise  # stdout is gone: no later line can be answered
        except LlmcliError as e:
            print_error(e.message, e.hint)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            info("interrupted")
    return 0


# --- piped ---------------------------------------------------------------------------------------

def input_lines(stream) -> Iterator[str]:
    """Lines of a binary or text stream without their line ends; invalid UTF-8 becomes U+FFFD."""
    buf = getattr(stream, "buffer", stream)
    warned = False
    while True:
        raw = buf.readline()
        if not raw:
            return
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                if not warned:
                    warn("input is not valid UTF-8; invalid bytes were replaced by U+FFFD")
                    warned = True
        else:
            line = raw
        yield line.rstrip("\r\n")


def run_piped(session, lines: Iterable[str], *, think_mode: str = "stderr", show_stats: bool = False,
              commands: bool = True) -> int:
    """One message per line (or \"\"\" block), each reply on stdout followed by a newline; no
    prompts, no colour, no banner. Returns 0, 1 (some line failed, or the input ended inside a
    \"\"\" block, which is then not sent) or 130 (Ctrl-C)."""
    it = iter(lines)

    def next_line(_prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    errors = 0
    while True:
        try:
            text = read_message(next_line)
        except UnfinishedBlock:
            print_error('the input ended inside a """ block; that message was not sent',
                        'end the block with a line ending in """')
            errors += 1
            break
        except EOFError:
            break
        except KeyboardInterrupt:
            return 130
        if not text.strip():
            continue
        item = parse(text) if commands else text
        try:
            if isinstance(item, Command):
                outcome = dispatch(item, session)
                _print_lines(outcome.lines)
                if outcome.action is Action.EXIT:
                    break
                if outcome.action is not Action.RETRY:
                    continue
                sink = TextSink(think_mode)
                result = session.retry(sink)
            else:
                sink = TextSink(think_mode)
                result = session.send(item, sink)
            sink.end()
            if show_stats:
                info(turn_stats_line(result.reply))
            if result.reply.interrupted:
                warn(INTERRUPTED_NOTE)
                return 130
        except OutputError:
            raise  # stdout is gone: no later line can be answered
        except LlmcliError as e:
            print_error(e.message, e.hint)
            errors += 1
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            sys.stdout.flush()
            return 130
    return 1 if errors else 0
