"""``llmcli finetune``: LoRA training on the torch backend and export for both backends.

Never imports ``llmcli.cli``; torch and peft are imported inside the functions that train.
"""
