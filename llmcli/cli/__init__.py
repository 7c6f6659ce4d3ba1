"""The command-line layer: argv parsing, validation and exit codes. No model logic."""
