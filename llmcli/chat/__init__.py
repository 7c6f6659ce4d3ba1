"""Chat: conversation state, context fitting, saved sessions, slash commands and the REPL.

Nothing here imports Typer: the REPL runs without the command-line layer (``llmcli.cli.chat``
wires it to flags), so every part is testable alone."""
