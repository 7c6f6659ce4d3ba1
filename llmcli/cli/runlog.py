"""What ``generate`` and ``chat`` hand to the run log (llmcli/logs.py), and when.

A ``PendingLog`` collects one run's records while the command works and writes them in
``flush()``, which the commands call after the answer is on stdout. It never raises.
"""

from __future__ import annotations

import sys


class PendingLog:
    def __init__(self, command: str, settings, *, no_log: bool, prompt: str | None = None,
                 system: str | None = None, params=None, model: str | None = None):
        from llmcli import logs

        self.enabled = not no_log and logs.enabled(settings)
        self.max_mb = logs.max_mb(settings)
        self.command = command
        self.prompt = prompt
        self.system = system
        self.params = params.to_dict() if params is not None else {}
        # Files put into the prompt (issue 15 item 1 sets these): [logs.file_entry(name, bytes), …]
        self.files: list[dict] = []
        self.model = model  # what was asked for, until a model is loaded
        self.model_sha256: str | None = None
        self.backend: str | None = None
        self.runs: list = []

    def loaded(self, ref, engine) -> None:
        from llmcli import logs

        self.model = ref.display
        self.model_sha256 = logs.model_sha256(ref)
        self.backend = engine.name

    def reply(self, reply, *, sample: int | None = None, prompt: str | None = None, system: str | None = None,
              conversation: str | None = None) -> None:
        if not self.enabled:
            return
        from llmcli import logs

        s = reply.stats
        params = dict(self.params, seed=s.seed)
        self.runs.append(logs.Run(
            self.command, prompt=prompt if prompt is not None else self.prompt, model=self.model,
            model_sha256=self.model_sha256, backend=self.backend,
            system=system if system is not None else self.system, files=list(self.files), params=params,
            seed=s.seed, prompt_tokens=s.prompt_tokens, completion_tokens=s.generated_tokens, timings=s.to_dict(),
            finish_reason=s.finish_reason, output=reply.text, thinking=reply.thinking or None,
            conversation=conversation, sample=sample))

    def failed(self, error) -> None:
        """A run that failed after its prompt was known (model missing, template error, overflow)."""
        if not self.enabled:
            return
        from llmcli import logs

        message = getattr(error, "message", None) or str(error)
        self.runs.append(logs.Run(self.command, prompt=self.prompt, model=self.model,
                                  model_sha256=self.model_sha256, backend=self.backend, system=self.system,
                                  files=list(self.files), params=self.params, error=message))

    def flush(self) -> None:
        """Write what was collected; the answer is already printed, so make sure it is visible."""
        if not self.runs:
            return
        from llmcli import logs
        from llmcli.output import warn

        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        runs, self.runs = self.runs, []
        logs.record(runs, max_mb=self.max_mb, warn=warn)
