"""Several requests in flight against one server (``generate --each-line --parallel N``, ``--n``):
the remote backend's counterpart of llama.cpp's ``ParallelDecoder``, with the same interface
(``submit``, ``free``, ``admit``, ``step``, ``close``; ``Sequence.events()``).

The server does the batching (llama-server across its ``-np`` slots, vLLM by itself); llmcli
only keeps N streaming requests open. Each request runs ``RemoteBackend.stream`` — the one
single-request path, with its error translation, stop strings and stats — in a thread of its
own, and puts its events in one inbox. Only the consumer's thread (the caller of ``step``)
routes events to their sequences and calls ``admit``, so the caller's bookkeeping never runs
in two threads: a finished request frees its slot and the next prompt is sent at once
(continuous admission), while records are still read in submission order.

A failed request (HTTP 4xx/5xx, a prompt too long for the server's window, a broken stream)
ends that sequence with its error, raised by ``events()`` to the consumer of that sequence
only. ``close`` cancels what is still in flight: the HTTP responses are closed, so the server
stops generating for them.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator

from llmcli.backends.base import Finish, SamplingParams, StreamEvent
from llmcli.errors import BackendError

POLL_S = 0.2  # how often a waiting consumer wakes up (a pending Ctrl-C is handled then at the latest)


class Handle:
    """One request's cancellation: the open ``openai`` stream, once there is one."""

    def __init__(self):
        self.cancelled = False
        self.stream = None
        self._lock = threading.Lock()

    def opened(self, stream) -> None:
        with self._lock:
            self.stream = stream
            cancelled = self.cancelled
        if cancelled:  # close() ran while the request was being sent
            self._close(stream)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            stream = self.stream
        if stream is not None:
            self._close(stream)

    @staticmethod
    def _close(stream) -> None:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - the reader thread may be using it; the socket closes regardless
            pass


class Sequence:
    """One submitted request: its events so far, in order; an exception ends them."""

    def __init__(self, decoder: RemoteDecoder, params: SamplingParams):
        self._decoder = decoder
        self.params = params
        self.handle = Handle()
        self.done = False
        self._buffer: deque = deque()

    def events(self) -> Iterator[StreamEvent]:
        while True:
            while not self._buffer:
                self._decoder.step()
            ev = self._buffer.popleft()
            if isinstance(ev, BaseException):
                raise ev
            yield ev
            if isinstance(ev, Finish):
                return


class RemoteDecoder:
    """Up to ``n`` requests to ``backend``'s server at once."""

    def __init__(self, backend, n: int):
        self.backend = backend
        self.n = n
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._running: set[Sequence] = set()
        self.admit: Callable[[], None] = lambda: None

    def free(self) -> int:
        return self.n - len(self._running)

    def submit(self, prompt, params: SamplingParams) -> Sequence:
        """Send ``prompt``; what can be checked without the server (parameters, an empty prompt)
        raises here, everything the server says arrives through the sequence's events."""
        seq = Sequence(self, params)
        events = self.backend.stream(prompt, params, handle=seq.handle)
        self._running.add(seq)
        threading.Thread(target=self._work, args=(seq, events), name="llmcli-remote-request", daemon=True).start()
        return seq

    def _work(self, seq: Sequence, events: Iterator[StreamEvent]) -> None:
        try:
            for ev in events:
                if seq.handle.cancelled:
                    return
                self._inbox.put((seq, ev))
        except BaseException as e:  # noqa: BLE001 - handed to the thread that reads this sequence
            if not seq.handle.cancelled:
                self._inbox.put((seq, e))

    def step(self) -> None:
        """Wait for the next event of any request and route it; a finished request frees its slot."""
        if not self._running:
            raise BackendError("the parallel decoder has nothing to run")  # a consumer waits on nothing
        while True:
            try:
                seq, ev = self._inbox.get(timeout=POLL_S)
                break
            except queue.Empty:
                continue
        seq._buffer.append(ev)
        if isinstance(ev, (Finish, BaseException)):
            seq.done = True
            self._running.discard(seq)
            self.admit()

    def close(self) -> None:
        """Cancel every request still in flight (Ctrl-C, an output error): their streams are closed."""
        for seq in list(self._running):
            seq.handle.cancel()
        self._running.clear()
