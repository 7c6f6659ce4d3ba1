"""llmcli: run large language models locally from the command line."""

__version__ = "0.1.0"
