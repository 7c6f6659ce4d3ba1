"""ChatSession in-process: prefix reuse measured from the backend's stats, bit-exact replies after
/undo, /retry and /system against a freshly loaded backend, Ctrl-C mid-reply, context overflow,
and thinking kept out of the history (with a scripted stand-in backend)."""

from __future__ import annotations

import pytest

from llmcli.backends.base import Capabilities, Finish, GenerationStats, Message, Prompt, SamplingParams, TokenEvent
from llmcli.backends.llamacpp import LlamaCppBackend
from llmcli.chat.conversation import Conversation
from llmcli.chat.engine import ChatSession, ContextOverflowError
from llmcli.output import NullSink

LONG = ("The history of computing is a story of people, machines and ideas that shaped the modern world. "
        "From the abacus to mechanical calculators, from punched cards to transistors, each step made "
        "computation cheaper and more widely available. ") * 12


@pytest.fixture(scope="module")
def backend(gguf_path):
    b = LlamaCppBackend(gguf_path, ctx_cap=2048)
    yield b
    b.close()


def fresh_reply(gguf_path, conv_dict: dict, action) -> str:
    """What a brand-new process does: load the model, load the saved conversation, act."""
    b = LlamaCppBackend(gguf_path, ctx_cap=2048)
    try:
        s = ChatSession(b, Conversation.from_dict(conv_dict))
        return action(s).reply.text
    finally:
        b.close()


@pytest.mark.parametrize("background", [False, True])
def test_second_turn_processes_only_the_new_tokens(backend, background):
    backend.reset()
    s = ChatSession(backend, Conversation(params=SamplingParams(temperature=0, max_tokens=24)),
                    background_prefill=background)
    first = s.send(LONG + "\nSummarise this in one sentence.", NullSink())
    assert first.reply.stats.prompt_tokens_processed == first.prompt_tokens > 500
    history = backend.chat_ids(s.conv.model_messages(), add_generation_prompt=False)
    second = s.send("Thanks. And in French?", NullSink())
    ids2 = backend.chat_ids(s.conv.model_messages()[:-1])
    assert ids2[:len(history)] == history  # the re-rendered history is a token prefix of the new prompt
    processed = second.reply.stats.prompt_tokens_processed
    assert processed == len(ids2) - len(history)  # exactly the new tokens: end-of-turn, message, header
    assert processed < 30 and second.prompt_tokens > 550
    s.wait_prefill()  # the module's backend is used by the next test


def test_replies_after_undo_retry_system_equal_a_fresh_process(backend, gguf_path):
    backend.reset()
    s = ChatSession(backend, Conversation(params=SamplingParams(temperature=0.9, max_tokens=32, seed=42),
                                          system="You are terse."))
    for q in ("What is GGUF?", "Tell me a story about a cat named Bob.", "And in French?"):
        s.send(q, NullSink())

    # /undo, then a different question
    s.undo()
    snapshot = s.conv.to_dict()
    r = s.send("Name three fruits.", NullSink())
    assert r.reply.stats.prompt_tokens_processed < r.prompt_tokens / 3  # the cache was really reused
    assert r.reply.text == fresh_reply(gguf_path, snapshot, lambda f: f.send("Name three fruits.", NullSink()))

    # /retry: a new sample (the next seed of the retry sequence), reproducible from the file
    snapshot = s.conv.to_dict()
    r = s.retry(NullSink())
    assert r.reply.stats.prompt_tokens_processed <= 2
    assert s.conv.messages[-1].attempt == 1
    assert r.reply.text == fresh_reply(gguf_path, snapshot, lambda f: f.retry(NullSink()))

    # /system: everything after the system prompt is re-evaluated
    s.set_system("You are a pirate.")
    snapshot = s.conv.to_dict()
    r = s.send("Who are you?", NullSink())
    assert r.reply.stats.prompt_tokens_processed > r.prompt_tokens - 10
    assert r.reply.text == fresh_reply(gguf_path, snapshot, lambda f: f.send("Who are you?", NullSink()))


class InterruptingSink:
    """Raises KeyboardInterrupt (what Ctrl-C does) after a few chunks of the answer."""

    def __init__(self, after: int):
        self.after = after
        self.seen = 0

    def answer(self, text):
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt

    def thinking(self, text):
        pass

    def end(self):
        pass


def test_ctrl_c_keeps_the_partial_reply_and_the_session_goes_on(backend):
    backend.reset()
    s = ChatSession(backend, Conversation(params=SamplingParams(temperature=0, max_tokens=200)))
    r = s.send("Write a long story about a dragon who learns to paint.", InterruptingSink(after=6))
    assert r.reply.interrupted and 0 < r.reply.stats.generated_tokens <= 7
    last = s.conv.messages[-1]
    assert last.role == "assistant" and last.interrupted and last.content == r.reply.text
    r2 = s.send("Give it a title.", NullSink())
    assert not r2.reply.interrupted and r2.reply.text
    # the partial reply went back to the model as ordinary text
    assert last.content in backend.chat_prompt(s.conv.model_messages())


def test_a_message_larger_than_the_window_is_an_error_and_the_session_survives(gguf_path):
    b = LlamaCppBackend(gguf_path, ctx_cap=256)
    try:
        s = ChatSession(b, Conversation(params=SamplingParams(temperature=0, max_tokens=8)))
        s.send("Hi", NullSink())
        before = s.conv.to_dict()
        with pytest.raises(ContextOverflowError) as e:
            s.send(LONG, NullSink())
        assert "256" in e.value.message and e.value.hint
        assert s.conv.to_dict()["messages"] == before["messages"]
        assert s.send("Hello again", NullSink()).reply.text
    finally:
        b.close()


class ScriptedBackend:
    """A stand-in with the Backend interface: one id per character, a ChatML-like template, and
    replies taken from a script. Enough to test what chat stores and sends."""

    name = "scripted"
    n_ctx = 4096
    has_chat_template = True
    capabilities = Capabilities(prefill=False, logprobs=False)

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts: list[str] = []

    def chat_prompt(self, messages, *, add_generation_prompt=True, reasoning=None):
        text = "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def chat_ids(self, messages, *, add_generation_prompt=True, reasoning=None):
        return [ord(c) for c in self.chat_prompt(messages, add_generation_prompt=add_generation_prompt)]

    def encode(self, *, messages=None, text=None, reasoning=None):
        rendered = self.chat_prompt(messages) if messages is not None else text
        return Prompt(tuple(ord(c) for c in rendered), tuple(messages or ()), rendered)

    def stream(self, prompt, params):
        prompt_ids = list(prompt.ids) if isinstance(prompt, Prompt) else list(prompt)
        self.prompts.append("".join(chr(i) for i in prompt_ids))
        text = self.replies.pop(0)
        for ch in text:
            yield TokenEvent(ord(ch), ch)
        yield Finish(text, [ord(c) for c in text], GenerationStats(prompt_tokens=len(prompt_ids),
                                                                   generated_tokens=len(text)))

    def close(self):
        pass


def test_thinking_is_never_sent_back_as_text():
    b = ScriptedBackend(["<think>step one</think>\n\nThe answer.", "Sure."])
    s = ChatSession(b, Conversation(params=SamplingParams(seed=1)))
    r = s.send("Q?", NullSink())
    assert r.reply.thinking == "step one"
    m = s.conv.messages[-1]
    assert (m.content, m.thinking) == ("The answer.", "step one")
    s.send("More?", NullSink())
    assert "step one" not in b.prompts[-1] and "<assistant>The answer.</assistant>" in b.prompts[-1]
    # templates that ask for it get it as reasoning_content
    assert s.conv.model_messages()[1] == Message("assistant", "The answer.", reasoning="step one")
