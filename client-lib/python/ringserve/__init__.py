"""ringserve: the Python client of ringserved, over libringserve's shared-memory rings.

    import ringserve
    with ringserve.Client(tenant="me") as client:
        print(client.generate("Once upon a time", max_new_tokens=32).text)
        with client.stream("Hello", max_new_tokens=16) as request:
            for piece in request.text():
                print(piece, end="", flush=True)

asyncio: ringserve.AsyncClient (ringserve/aio.py). docs/client-python.md has the long form.

Errors: the library's negative errno values become OSError with that errno (Python picks
the subclass: ConnectionResetError when the daemon is gone, TimeoutError, ...); a request
that the daemon ended with an error raises RequestError (errno = its status),
RequestCancelled for a cancel.
"""
import errno as _errno
from collections import namedtuple

from . import _ringserve
from ._ringserve import Detokenizer

__all__ = ["Client", "AsyncClient", "Request", "AsyncRequest", "Completion", "Generation",
           "ModelInfo", "RequestError", "RequestCancelled", "Detokenizer", "connect"]

ModelInfo = namedtuple("ModelInfo", [
    "vocab_size", "bos_token", "eos_token", "max_seq_len", "max_prompt_tokens",
    "max_output_tokens", "max_inflight", "client_id", "model_name", "engine_name", "has_vocab"])
ModelInfo.__doc__ = "What the daemon serves (rs_model_info); bos/eos_token None: none."

Completion = namedtuple("Completion", [
    "status", "output_len", "eos", "cached_tokens", "queued_us", "first_token_us",
    "total_us", "preemptions"])
Completion.__doc__ = ("A finished request (rs_completion): status 0 or a negative errno; "
                      "timings in microseconds on the daemon's clock (2**32-1: never reached).")

Generation = namedtuple("Generation", ["tokens", "text", "completion"])
Generation.__doc__ = ("The result of generate(): the output token ids (a list), the output "
                      "text (None unless the prompt was text or text=True), the Completion.")


class RequestError(OSError):
    """The daemon ended a request with an error; errno is its status (as a positive
    errno), .completion the Completion and .tokens what it produced before."""


class RequestCancelled(RequestError):
    """The request was cancelled (status -ECANCELED)."""


def _completion(raw):
    status, output_len, flags, cached, queued, first, total, preemptions = raw
    return Completion(status, output_len, bool(flags & _ringserve.COMPLETION_EOS), cached,
                      queued, first, total, preemptions)


def _check(completion, tokens=None):
    if completion.status == 0:
        return completion
    code = -completion.status
    cls = RequestCancelled if code == _errno.ECANCELED else RequestError
    import os
    error = cls(code, f"request failed: {os.strerror(code)}")
    error.completion = completion
    error.tokens = tokens
    raise error


def _timeout_ms(timeout):
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout: seconds >= 0, or None for no limit")
    return int(timeout * 1000 + 0.999)


def _flags(ignore_eos, bos):
    return ((_ringserve.GENERATE_IGNORE_EOS if ignore_eos else 0) |
            (0 if bos else _ringserve.GENERATE_NO_BOS))


class _Base:
    """What Client and AsyncClient share: the connection and the calls that never block."""

    def __init__(self, socket=None, tenant=None, spin_us=0):
        self._c = _ringserve.Connection(socket, tenant, spin_us)
        self._info = None

    @property
    def info(self):
        """ModelInfo of the daemon's model and this connection's limits."""
        if self._info is None:
            self._info = ModelInfo(**self._c.model_info())
        return self._info

    @property
    def closed(self):
        return self._c.closed

    def tokenize(self, text, bos=False):
        """Token ids of text with the model's vocabulary (BOS first if bos and the model
        has one). OSError(ENOTSUP) when the daemon serves no vocabulary."""
        return self._c.tokenize(text, bos)

    def detokenize(self, ids):
        """Text of ids as the start of a text (complete: a trailing partial character
        becomes U+FFFD)."""
        detok = Detokenizer(self._c)
        return detok.feed(ids) + detok.flush()

    def detokenizer(self, request=None):
        """An incremental Detokenizer (rs_detok_*): feed(ids) -> str, flush() -> str. With
        a request, it decodes that request's output as the continuation of its prompt."""
        return Detokenizer(self._c, -1 if request is None else request.handle)

    def _submit(self, cls, prompt, max_new_tokens, temperature, top_p, top_k, seed,
                ignore_eos, bos, output_len_hint):
        handle = self._c.submit(prompt, max_new_tokens, temperature, top_p, top_k, seed,
                                output_len_hint, _flags(ignore_eos, bos))
        return cls(self, handle)


class _RequestBase:
    """A submitted request: its handle stays reserved (and its output readable) until
    release(), the end of a `with` block, or the object's collection."""

    def __init__(self, client, handle):
        self._client = client
        self._c = client._c
        self.handle = handle
        self._released = False

    def output(self):
        """A read-only memoryview (format 'I') of the output tokens written so far,
        straight over shared memory, no copy. It pins the request: release() (and the
        client's close()) raise BufferError while such a view is alive; release the view
        (view.release(), or `with req.output() as view:`) first. It sees the tokens
        that existed when it was made."""
        self._check_held()
        return self._c.view(self.handle)

    def tokens_so_far(self):
        """A list copy of the output written so far."""
        self._check_held()
        return self._c.tokens(self.handle)

    def cancel(self):
        """Ask the daemon to stop it; it completes with -ECANCELED at its next step (or
        normally, if it finished first)."""
        self._check_held()
        self._c.cancel(self.handle)

    def completion(self):
        """The Completion if it has completed, else None (never waits)."""
        self._check_held()
        raw = self._c.completion(self.handle)
        return None if raw is None else _completion(raw)

    def _check_held(self):
        if self._released:
            raise ValueError(f"request {self.handle} was released")

    def _release_now(self):
        self._c.release(self.handle)
        self._released = True

    def __del__(self):
        try:
            if not self._released:
                self._c.abandon(self.handle)
        except Exception:  # interpreter shutdown
            pass


class Request(_RequestBase):
    """A request on a (synchronous) Client."""

    def wait(self, timeout=None):
        """Wait for the completion (the GIL is released meanwhile) and return it.
        TimeoutError after timeout seconds; ConnectionResetError if the daemon dies."""
        self._check_held()
        return _completion(self._c.wait(self.handle, _timeout_ms(timeout)))

    def tokens(self, timeout=None):
        """Iterate over the output token ids as they are generated (from the first, even if
        some were read before). timeout: seconds to wait for each next token. Ends when the
        request completes; raises RequestError (RequestCancelled) if it failed, after
        yielding what it produced."""
        self._check_held()
        have, ms = 0, _timeout_ms(timeout)
        while True:
            count, done = self._c.wait_output(self.handle, have, ms)
            if count > have:
                new = self._c.tokens(self.handle, have)
                have += len(new)
                yield from new
            if done and count <= have:
                _check(self.completion(), self._c.tokens(self.handle))
                return

    __iter__ = tokens

    def text(self, timeout=None):
        """Iterate over the output as text: each piece is whole UTF-8 characters (a
        character split between tokens waits for its last byte), decoded as the
        continuation of the prompt. Needs a daemon with a vocabulary."""
        self._check_held()
        detok = Detokenizer(self._c, self.handle)
        have, ms = 0, _timeout_ms(timeout)
        while True:
            count, done = self._c.wait_output(self.handle, have, ms)
            if count > have:
                new = self._c.tokens(self.handle, have)
                have += len(new)
                piece = detok.feed(new)
                if piece:
                    yield piece
            if done and count <= have:
                tail = detok.flush()
                if tail:
                    yield tail
                _check(self.completion(), self._c.tokens(self.handle))
                return

    def release(self, timeout=None):
        """Give the handle back. A request still running is cancelled first and waited
        for (timeout seconds). BufferError while a memoryview of its output is alive."""
        if self._released:
            return
        if self._c.closed:
            self._released = True
            return
        if self.completion() is None:
            self._c.cancel(self.handle)
            self._c.wait(self.handle, _timeout_ms(timeout))
        self._release_now()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._c.closed:
            return
        try:
            self.release()
        except OSError:
            if exc[0] is None:
                raise
            # Already failing (the daemon died, say): do not hide that error.


class Client(_Base):
    """A synchronous connection to ringserved.

    Client(socket=None, tenant=None, spin_us=0): socket None means $RINGSERVE_SOCKET, else
    $XDG_RUNTIME_DIR/ringserve.sock, else /run/ringserve/ringserve.sock; tenant None means
    $RINGSERVE_TENANT or "default"; spin_us: busy-poll this long before sleeping in a wait
    (0: the library's default of 50 us; -1: never spin). One thread at a time uses it;
    calls from other threads wait their turn."""

    def generate(self, prompt, max_new_tokens=16, *, temperature=0.0, top_p=1.0, top_k=0,
                 seed=0, ignore_eos=False, bos=True, output_len_hint=0, text=None,
                 timeout=None):
        """Generate from prompt (a str, tokenized by the library, or a sequence of token
        ids) and return a Generation. text: decode the output (default: when the prompt is
        a str). Raises RequestError if the daemon failed it, TimeoutError after timeout
        seconds (the request is then cancelled)."""
        if text is None:
            text = isinstance(prompt, str)
        if not text:  # one call into C: submit, wait, copy, release
            tokens, raw = self._c.run(prompt, max_new_tokens, temperature, top_p, top_k, seed,
                                      output_len_hint, _flags(ignore_eos, bos), 0,
                                      _timeout_ms(timeout))
            return Generation(tokens, None, _check(_completion(raw), tokens))
        with self.submit(prompt, max_new_tokens, temperature=temperature, top_p=top_p,
                         top_k=top_k, seed=seed, ignore_eos=ignore_eos, bos=bos,
                         output_len_hint=output_len_hint) as request:
            try:
                completion = request.wait(timeout)
            except TimeoutError:
                request.cancel()
                raise
            tokens = request.tokens_so_far()
            _check(completion, tokens)
            detok = Detokenizer(self._c, request.handle)
            return Generation(tokens, detok.feed(tokens) + detok.flush(), completion)

    def submit(self, prompt, max_new_tokens=16, *, temperature=0.0, top_p=1.0, top_k=0,
               seed=0, ignore_eos=False, bos=True, output_len_hint=0):
        """Submit a request and return its Request without waiting. OSError(EAGAIN) when
        every request slot is taken (release some)."""
        return self._submit(Request, prompt, max_new_tokens, temperature, top_p, top_k, seed,
                            ignore_eos, bos, output_len_hint)

    stream = submit  # `for token in client.stream(...)` / `.text()`

    def close(self):
        """Close the connection (the daemon cancels what still runs). BufferError while a
        memoryview of some request's output is alive."""
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(socket=None, tenant=None, spin_us=0):
    """Client(socket, tenant, spin_us)."""
    return Client(socket, tenant, spin_us)


from .aio import AsyncClient, AsyncRequest  # noqa: E402
