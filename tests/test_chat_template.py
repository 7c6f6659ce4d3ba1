"""The chat-template renderer's budget and error mapping, without a model (the CLI rows with a
hostile GGUF are in test_bad_input_files.py)."""

from __future__ import annotations

import threading
import time

import pytest

from llmcli import chat_template
from llmcli.chat_template import ChatTemplate
from llmcli.errors import ModelError

MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("source,needle", [
    ('{% set ns = namespace(s="xx") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}', "limit is"),
    ('{% set ns = namespace(s="xx") %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}', "limit is"),
    ('{{ ("x" * 4096)|replace("x", "y" * 10000) }}', "limit is"),
    ('{{ ("x" * 4096).replace("x", "y" * 10000) }}', "limit is"),
    ('{{ range(100000)|map("string")|join("y" * 100000) }}', "limit is"),
    ('{{ 2 ** 100000000 }}', "number too large"),
    ('{{ "%999999999d" % 1 }}', "format width"),
    ('{{ "a".ljust(10**9) }}', "limit is"),
    ('{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}', "output is longer"),
    ('{{ raise_exception("no tools here") }}', "no tools here"),
    ('{% import "macros.j2" as m %}', "load another template"),
])
def test_every_failure_is_one_template_error(source, needle):
    with pytest.raises(ModelError) as e:
        ChatTemplate(source).render(MSGS)
    assert e.value.message.startswith("the model's chat template failed: ") and needle in e.value.message
    assert "--raw" in e.value.hint


def test_time_budget_stops_a_runaway_loop_and_the_thread_carries_on(monkeypatch):
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.3)
    t = time.monotonic()
    with pytest.raises(ModelError, match="took longer than 0.3 s"):
        ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").render(MSGS)
    assert time.monotonic() - t < 3
    time.sleep(0.5)  # a deadline never fires after its render ended
    assert ChatTemplate("{{ messages[0].content }}").render(MSGS) == "hi"


def test_budget_is_per_thread():
    results = {}

    def render(name, source):
        try:
            results[name] = ChatTemplate(source).render(MSGS)
        except ModelError as e:
            results[name] = e.message

    slow = threading.Thread(target=render, args=("slow", "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                         "{% endfor %}{% endfor %}"))
    slow.start()
    render("fast", "{% for m in messages %}{{ m.role }}{% endfor %}")
    slow.join(30)
    assert results["fast"] == "user" and "took longer" in results["slow"]


def test_ordinary_templates_are_unchanged():
    src = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' ~ '\n' }}{% endif %}{{ '%s-%d' % ('a', 2) }}"
           "{{ [1, 2] + [3] }}{{ 'ab' * 3 }}{{ messages | tojson }}{{ ', '.join(['x', 'y']) }}")
    out = ChatTemplate(src).render(MSGS + [{"role": "assistant", "content": " yo "}])
    # trim_blocks (as in transformers) drops the newline right after {% endif %}
    assert out == ('<|user|>hi<|assistant|>yo<|assistant|>\na-2[1, 2, 3]ababab'
                   '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": " yo "}]x, y')
