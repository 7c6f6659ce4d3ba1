"""``llmcli chat``: an interactive conversation (or a piped one), saved as it goes."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.cli import options as o
from llmcli.errors import UsageError

SESSION_PANEL = "Session"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


CHAT_SAMPLING = tuple(n for n in P.SAMPLING_NAMES if n != "n")  # one reply per turn; /retry for another


@o.table_options("model", "file", "json_schema", "grammar", *CHAT_SAMPLING, *P.RUNTIME_NAMES, help={
    "file": "A UTF-8 text file (no NUL bytes) attached to the first message, labelled with its name "
            "(/file attaches more later). Repeatable.",
    "seed": "Base seed: the reply to message k (from 0) uses seed+k, so a conversation replays identically."})
def chat(
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt (replaces a resumed "
                                                  "conversation's).", show_default=False)] = None,
    continue_: Annotated[bool, typer.Option("--continue", "-c", help="Resume the last conversation (saved "
                                            "automatically in the data dir).", rich_help_panel=SESSION_PANEL)] = False,
    session: Annotated[Optional[str], typer.Option("--session", help="Resume or start the named conversation (a "
                                                   "name in the sessions folder, or a path to a .json file).",
                                                   rich_help_panel=SESSION_PANEL, show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List saved conversations and exit.",
                                        rich_help_panel=SESSION_PANEL)] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not save this conversation automatically.",
                                          rich_help_panel=SESSION_PANEL)] = False,
    no_commands: Annotated[bool, typer.Option("--no-commands", help="Treat every input line as a message, even one "
                                              "starting with / (no slash commands): use it to pipe untrusted text.",
                                              rich_help_panel=SESSION_PANEL)] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Render finished replies as Markdown (terminal only).",
                                           rich_help_panel=o.OUTPUT_PANEL)] = False,
    stats: Annotated[bool, typer.Option("--stats", help="After each reply, print token counts (prompt tokens "
                                        "processed vs reused), speeds and time to first token to stderr.",
                                        rich_help_panel=o.OUTPUT_PANEL)] = False,
    allow_pickle: o.AllowPickleOpt = False,
    trust_remote_code: o.TrustRemoteCodeOpt = False,
    compile_: o.CompileOpt = False,
    no_log: o.NoLogOpt = False,
    verbose: o.VerboseOpt = False,
    flags: dict | None = None,
) -> None:
    """Chat with a model: streamed replies, slash commands, saved conversations.

    Type /help inside for the commands. Without a terminal (piped input) every input line
    is one message and every reply one block on stdout; a line starting with / is still a
    command (/save, /export write files), so pipe untrusted text with --no-commands.

    Examples:

      llmcli chat -m smol --system "You are terse."

      llmcli chat --continue

      llmcli chat -f notes.md --reasoning off

      printf 'Hi\\nAnd in French?\\n' | llmcli chat --temperature 0

      llmcli chat --no-commands --no-save < untrusted.txt
    """
    from pathlib import Path

    from llmcli.chat import sessions
    from llmcli.chat.engine import ChatSession, check_chat_model, check_reasoning
    from llmcli.chat.repl import input_lines, run_interactive, run_piped
    from llmcli.cli.generate import resolve_think_mode
    from llmcli.cli.structured import read_constraint
    from llmcli.config import load_settings
    from llmcli.output import info, warn

    if list_:
        text = sessions.format_list(sessions.list_sessions())
        if text:
            sys.stdout.write(text)
        else:
            info(f"no saved conversations in {sessions.sessions_dir()}")
        return
    if continue_ and session:
        raise UsageError("--continue and --session cannot be combined", "--continue resumes the last conversation")

    settings = load_settings()
    # Every flag is parsed and range-checked before any session file is read or model loaded.
    given = o.parse_flags(flags)
    sampling = {n: given[n] for n in CHAT_SAMPLING}
    params = o.sampling_params(settings, **sampling)
    think_mode = resolve_think_mode(o.setting(settings, given, "think"), _isatty(sys.stdout))
    opts = o.backend_options(settings, given, verbose=verbose, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, compile=compile_)
    files, _ = o.read_inputs(given["file"] or (), stdin=False)  # stdin carries the messages
    constraint = read_constraint(given["json_schema"], given["grammar"])  # every reply; not saved with the session

    # Which conversation: resumed (never overwritten when corrupt: load raises first) or new.
    loaded = None
    path: Path | None = None
    if continue_:
        path = sessions.latest()
        if path is None:
            raise UsageError("there is no saved conversation to continue",
                             f"start one with llmcli chat (conversations are saved in {sessions.sessions_dir()})")
        loaded = sessions.load(path)
    elif session:
        path = sessions.target_path(session)
        if path.exists():
            loaded = sessions.load(path)
    if path is None and not no_save:
        path = sessions.sessions_dir() / (sessions.new_name() + sessions.SUFFIX)
    if path is not None and not no_save:
        sessions.check_writable(path)  # fail before loading the model, not after the first reply

    if loaded is not None:
        # defaults < config < env < the saved conversation's parameters < flags
        params = loaded.params.replace(**{k: v for k, v in sampling.items() if v is not None})
    interactive = _isatty(sys.stdin) and _isatty(sys.stdout)

    model_arg = given["model"]
    if model_arg is None and loaded is not None and (loaded.model_path or loaded.model):
        saved = loaded.model_path if loaded.model_path and Path(loaded.model_path).exists() else loaded.model
        model_arg = saved
    ref, engine = o.load_model(model_arg, settings, opts)

    def loader(name: str):
        r, b = o.load_model(name, settings, opts)
        return r.display, r.location, b

    chat_session = None
    try:
        check_chat_model(engine, ref.display)
        from llmcli.chat.conversation import Conversation

        conv = loaded if loaded is not None else Conversation(params=params)
        conv.params = params if params.seed is not None else params.replace(seed=conv.params.seed)
        conv.params = conv.params.replace(constraint=constraint)
        if system is not None:
            conv.set_system(system)
        conv.model, conv.model_path = ref.display, ref.location
        saver = sessions.Autosaver(path, enabled=not no_save)
        chat_session = ChatSession(engine, conv, autosaver=saver, notify=info, background_prefill=interactive,
                                   model_loader=loader, on_turn=_turn_logger(settings, no_log, ref))
        check_reasoning(engine, conv.params.reasoning)
        if constraint is not None:  # a schema the backend cannot enforce fails now, not at the first reply
            from llmcli.backends.core import preflight

            preflight(engine, conv.params)
        chat_session.attach(files)
        if loaded is not None:
            if interactive:
                info(f"resumed {path.stem if path else ''}: {conv.exchanges} exchange(s)")
            if conv.pending:
                warn("the last message has no reply (the process stopped before it finished): /retry generates "
                     "it, /undo drops it, a new message replaces it")
        if interactive:
            where = f"saved as {saver.name}" if saver.enabled and saver.path else "not saved"
            banner = [f"llmcli chat · {ref.display} · {engine.name} · {engine.n_ctx}-token window · {where}",
                      'Type /help for commands, """ for a multi-line message, /exit or Ctrl-D to leave.'
                      if not no_commands else
                      'Commands are off (--no-commands): every line is sent; """ for a multi-line message, '
                      'Ctrl-D to leave.']
            status = run_interactive(chat_session, think_mode=think_mode, markdown=markdown, show_stats=stats,
                                     history_file=sessions.history_path(), banner=banner,
                                     commands=not no_commands)
        else:
            status = run_piped(chat_session, input_lines(sys.stdin), think_mode=think_mode, show_stats=stats,
                               commands=not no_commands)
    finally:
        if chat_session is not None:
            chat_session.close()  # closes the backend in use (it changes with /model)
        else:
            engine.close()
    if status:
        raise typer.Exit(status)


def _turn_logger(settings, no_log: bool, ref):
    """Each chat turn is one run-log record, written when its reply is complete."""
    from llmcli import logs
    from llmcli.cli.runlog import PendingLog

    log = PendingLog("chat", settings, no_log=no_log)
    if not log.enabled:
        return None
    first_sha256 = logs.model_sha256(ref)

    def on_turn(session, result) -> None:
        conv = session.conv
        log.model, log.backend, log.params = conv.model, session.backend.name, conv.params.to_dict()
        log.model_sha256 = first_sha256 if conv.model == ref.display else None  # after /model: not known cheaply
        user = next((m.content for m in reversed(conv.messages) if m.role == "user"), None)
        log.reply(result.reply, prompt=user, system=conv.system, conversation=session.autosaver.name)
        log.flush()

    return on_turn


def register(app: typer.Typer) -> None:
    app.command("chat", no_args_is_help=False)(chat)
