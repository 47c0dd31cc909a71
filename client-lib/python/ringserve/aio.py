"""asyncio client: libringserve's event-loop descriptor (rs_event_fd) in the loop's reader
set, rs_event_arm before every sleep. No thread, no polling: a task that waits for
tokens sleeps in the event loop until the daemon writes the descriptor (or dies).

    client = await ringserve.AsyncClient.connect(tenant="me")
    async with client.stream("Hello", max_new_tokens=16) as request:
        async for piece in request.text():
            print(piece, end="")
    client.close()
"""
import asyncio
import errno

from . import (Detokenizer, Generation, _Base, _check, _completion, _RequestBase,
               _ringserve)


class _Dispatcher:
    """One per AsyncClient: owns the descriptor's reader callback and the tasks waiting
    for news. A task waits for its own request: when the descriptor fires, only the
    tasks whose request moved (more tokens, or completed) are woken, so hundreds of
    queued requests cost a progress() call each per event, not a task switch."""

    def __init__(self, conn, loop):
        self._c = conn
        self._loop = loop
        self._fd = conn.event_fd()
        self._waiters = []  # (future, moved): moved() says whether to wake it now
        self.streams = 0  # tasks reading tokens: arm for output too, not only completions
        self.wakeups = 0  # futures resolved: how tests see that idle waiters slept
        self._error = None
        self.start()

    def start(self):
        self._loop.add_reader(self._fd, self._on_readable)

    def _events(self):
        events = _ringserve.EVENT_COMPLETION
        if self.streams:
            events |= _ringserve.EVENT_OUTPUT
        return events

    def _on_readable(self):
        try:
            news = self._c.pump(self._events())
        except Exception as error:  # the daemon is gone: every waiter gets the error
            self._fail(error)
            return
        self._wake()
        if news:
            # pump() may return with news before arming the descriptor: go round again
            # (after the others have run) until it is armed with nothing new.
            self._loop.call_soon(self._on_readable)

    def _wake(self):
        still = []
        for future, moved in self._waiters:
            if future.done():
                continue
            try:
                wake = moved()
            except Exception:  # its request is gone (released elsewhere): let it look
                wake = True
            if wake:
                self.wakeups += 1
                future.set_result(None)
            else:
                still.append((future, moved))
        self._waiters = still

    def _fail(self, error):
        self._error = error
        self._loop.remove_reader(self._fd)
        waiters, self._waiters = self._waiters, []
        for future, _ in waiters:
            if not future.done():
                future.set_exception(type(error)(*error.args))

    def stop(self):
        self._loop.remove_reader(self._fd)

    async def news(self, moved):
        """Return once moved() is true (the caller's request has more tokens or has
        completed); raise the connection's error if it failed."""
        while True:
            if self._error is not None:
                raise type(self._error)(*self._error.args)
            try:
                news = self._c.pump(self._events())  # arms the descriptor when nothing is new
            except Exception as error:
                self._fail(error)
                raise
            if news:
                self._wake()
            if moved():
                return
            if not news:
                break  # armed: sleep until the descriptor is readable
            await asyncio.sleep(0)  # news for others only: let them look, then go round
        future = self._loop.create_future()
        self._waiters.append((future, moved))
        await future


class AsyncRequest(_RequestBase):
    """A request on an AsyncClient. Iterate with `async for` over tokens() or text()."""

    async def wait(self):
        """The Completion, once it has completed (use asyncio.wait_for for a timeout)."""
        self._check_held()
        while True:
            completion = self.completion()
            if completion is not None:
                return completion
            await self._client._dispatcher().news(lambda: self._c.progress(self.handle)[1])

    async def _chunks(self):
        dispatcher = self._client._dispatcher()
        dispatcher.streams += 1
        have = 0
        try:
            while True:
                raw = self._c.completion(self.handle)  # before the tokens: then they are all
                new = self._c.tokens(self.handle, have)
                have += len(new)
                if new:
                    yield new
                if raw is not None:
                    _check(_completion(raw), self._c.tokens(self.handle))
                    return
                if not new:
                    await dispatcher.news(lambda: self._moved(have))
        finally:
            dispatcher.streams -= 1

    def _moved(self, have):
        count, done = self._c.progress(self.handle)
        return done or count > have

    async def tokens(self):
        """Async-iterate over the output token ids as they are generated. Ends when the
        request completes; raises RequestError (RequestCancelled) if it failed, and
        ConnectionResetError if the daemon dies."""
        self._check_held()
        async for chunk in self._chunks():
            for token in chunk:
                yield token

    def __aiter__(self):
        return self.tokens()

    async def text(self):
        """Async-iterate over the output as text (whole UTF-8 characters per piece)."""
        self._check_held()
        detok = Detokenizer(self._c, self.handle)
        async for chunk in self._chunks():
            piece = detok.feed(chunk)
            if piece:
                yield piece
        tail = detok.flush()
        if tail:
            yield tail

    async def release(self):
        """Give the handle back; a running request is cancelled and waited for first."""
        if self._released:
            return
        if self._c.closed:
            self._released = True
            return
        if self.completion() is None:
            self._c.cancel(self.handle)
            await self.wait()
        self._release_now()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        if self._c.closed:
            return
        try:
            await self.release()
        except OSError:
            if exc[0] is None:
                raise
            # Already failing (the daemon died): do not hide that error.


class AsyncClient(_Base):
    """An asyncio connection to ringserved. Create it with `await AsyncClient.connect(...)`
    (same arguments as Client) from the loop that will use it."""

    def __init__(self, socket=None, tenant=None, spin_us=-1):
        super().__init__(socket, tenant, spin_us)
        self._dispatch = None

    @classmethod
    async def connect(cls, socket=None, tenant=None):
        return cls(socket, tenant)

    def _dispatcher(self):
        loop = asyncio.get_running_loop()
        if self._dispatch is None:
            self._dispatch = _Dispatcher(self._c, loop)
        elif self._dispatch._loop is not loop:
            raise RuntimeError("an AsyncClient serves the event loop it was first used in")
        return self._dispatch

    def submit(self, prompt, max_new_tokens=16, *, temperature=0.0, top_p=1.0, top_k=0,
               seed=0, ignore_eos=False, bos=True, output_len_hint=0):
        """Submit (never waits) and return an AsyncRequest."""
        return self._submit(AsyncRequest, prompt, max_new_tokens, temperature, top_p, top_k,
                            seed, ignore_eos, bos, output_len_hint)

    stream = submit

    async def generate(self, prompt, max_new_tokens=16, *, text=None, **params):
        """As Client.generate (use asyncio.wait_for for a timeout)."""
        if text is None:
            text = isinstance(prompt, str)
        async with self.submit(prompt, max_new_tokens, **params) as request:
            completion = await request.wait()
            tokens = request.tokens_so_far()
            _check(completion, tokens)
            decoded = None
            if text:
                detok = Detokenizer(self._c, request.handle)
                decoded = detok.feed(tokens) + detok.flush()
            return Generation(tokens, decoded, completion)

    def close(self):
        """Close the connection; tasks waiting on it raise ConnectionAbortedError.
        BufferError while a memoryview of an output is alive (then nothing changes)."""
        dispatch = self._dispatch
        if dispatch is not None:
            dispatch.stop()  # before rs_close closes the descriptor
        try:
            self._c.close()
        except BufferError:
            if dispatch is not None:
                dispatch.start()
            raise
        self._dispatch = None
        if dispatch is not None:
            dispatch._fail(ConnectionAbortedError(errno.ECONNABORTED,
                                                  "the AsyncClient was closed"))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
