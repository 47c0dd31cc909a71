"""The synchronous client against a real ringserved."""
import errno
import os
import subprocess

import pytest

import ringserve
from conftest import BUILD, NULL_VOCAB, null_tokens

PROMPT = [1, 15043, 3186, 29991]


def test_model_info(null_daemon):
    with ringserve.Client(null_daemon.socket, tenant="py-info") as client:
        info = client.info
        assert info.vocab_size == NULL_VOCAB  # --null-vocab
        assert info.engine_name == "null"
        assert info.max_output_tokens == 4096  # ringserved's default --max-output
        assert info.has_vocab is False


def test_generate_ids(null_daemon):
    with ringserve.connect(null_daemon.socket) as client:
        result = client.generate(PROMPT, 8)
        assert result.tokens == null_tokens(PROMPT, 8)
        assert result.text is None
        assert result.completion.status == 0 and result.completion.output_len == 8
        # The slot was released: many more requests than slots go through.
        for i in range(300):
            assert client.generate([i + 1], 1).tokens == null_tokens([i + 1], 1)


def test_stream_tokens(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")  # a token per millisecond
    with ringserve.Client(daemon.socket) as client:
        with client.stream(PROMPT, 40) as request:
            tokens = request.tokens(timeout=10)
            streamed = [next(tokens) for _ in range(5)]
            with request.output() as view:  # while it runs: the tokens written so far
                assert 5 <= len(view) <= 40
                assert view.tolist() == null_tokens(PROMPT, len(view))
            streamed += list(tokens)
            assert streamed == null_tokens(PROMPT, 40)
            assert request.wait(timeout=10).output_len == 40


def test_memoryview_over_shared_memory(null_daemon):
    client = ringserve.Client(null_daemon.socket)
    request = client.submit(PROMPT, 16)
    assert request.wait(timeout=10).status == 0
    view = request.output()
    assert view.readonly and view.format == "I" and view.itemsize == 4
    assert view.tolist() == null_tokens(PROMPT, 16)
    with pytest.raises(TypeError):
        view[0] = 1
    # The view pins the request and the connection: misuse raises instead of crashing.
    with pytest.raises(BufferError):
        request.release()
    with pytest.raises(BufferError):
        client.close()
    second = view[4:8]  # a slice shares the export
    view.release()
    with pytest.raises(BufferError):
        request.release()
    second.release()
    request.release()
    with pytest.raises(ValueError):
        request.output()
    with pytest.raises(ValueError):
        view.tolist()  # a released memoryview refuses access
    client.close()


def test_collected_view_unpins(null_daemon):
    with ringserve.Client(null_daemon.socket) as client:
        with client.submit(PROMPT, 4) as request:
            request.wait(timeout=10)
            assert list(request.output()) == null_tokens(PROMPT, 4)
            # The temporary view is gone: release at the end of `with` works.


def test_cancel(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")
    with ringserve.Client(daemon.socket) as client:
        with client.stream(PROMPT, 4000) as request:
            tokens = request.tokens(timeout=10)
            first = [next(tokens) for _ in range(3)]
            assert first == null_tokens(PROMPT, 3)
            request.cancel()
            with pytest.raises(ringserve.RequestCancelled) as caught:
                for _ in tokens:
                    pass
            assert caught.value.errno == errno.ECANCELED
            completion = request.completion()
            assert completion.status == -errno.ECANCELED
            # 4000 steps take 4 s; a cancel ends it at its next step.
            assert 3 <= completion.output_len < 4000
            assert caught.value.tokens == null_tokens(PROMPT, completion.output_len)


def test_daemon_dies_mid_stream(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")
    client = ringserve.Client(daemon.socket)
    request = client.stream(PROMPT, 4000)
    tokens = request.tokens(timeout=10)  # a hang fails with TimeoutError, not a stuck test
    assert next(tokens) == null_tokens(PROMPT, 1)[0]
    daemon.kill()
    with pytest.raises(ConnectionError) as caught:
        for _ in tokens:
            pass
    assert caught.value.errno in (errno.ECONNRESET, errno.EHOSTDOWN)
    with pytest.raises(ConnectionError):
        client.submit(PROMPT, 1)
    client.close()


def test_errors(null_daemon, tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        ringserve.Client(str(tmp_path / "nobody-listens"))
    assert "connect to ringserved" in str(caught.value)
    with pytest.raises(OSError) as caught:
        ringserve.Client(null_daemon.socket, tenant="bad tenant name!")
    assert caught.value.errno == errno.EINVAL
    with ringserve.Client(null_daemon.socket) as client:
        with pytest.raises(OSError) as caught:
            client.generate(PROMPT, 0)
        assert caught.value.errno == errno.EINVAL
        with pytest.raises(OSError) as caught:
            client.generate(PROMPT, 1 << 20)
        assert caught.value.errno == errno.E2BIG
        with pytest.raises(ValueError):
            client.generate([1, -2], 1)
        with pytest.raises(ValueError):
            client.generate([1, 1 << 40], 1)
        with pytest.raises(TypeError):
            client.generate(3, 1)
        with pytest.raises(TypeError):
            client.generate(b"bytes are not token ids", 1)
        with pytest.raises(ringserve.RequestError) as caught:
            client.generate([NULL_VOCAB + 5], 1)  # the daemon checks ids against the vocabulary
        assert caught.value.errno == errno.ERANGE
        with pytest.raises(OSError) as caught:
            client.tokenize("no vocabulary here")
        assert caught.value.errno == errno.ENOTSUP
        assert client.generate(PROMPT, 2).tokens == null_tokens(PROMPT, 2)  # still usable
    with pytest.raises(ValueError):
        client.generate(PROMPT, 1)  # closed


def reference_generation(model_path, prompt, steps):
    """ids and text of ringserve-generate (the engine's own decoder) for the same model."""
    common = [os.path.join(BUILD, "ringserve-generate"), model_path, "--prompt", prompt,
              "-n", str(steps), "--ignore-eos", "--backend", "cpu", "--threads", "1"]
    ids = subprocess.run(common + ["--ids"], check=True, capture_output=True, timeout=60).stdout
    text = subprocess.run(common, check=True, capture_output=True, timeout=60).stdout
    assert text.endswith(b"\n")  # it ends its output with a newline of its own
    return [int(t) for t in ids.split()], text[:-1]


def test_text_generate_and_stream(model_daemon, model_path):
    prompt, steps = "Once upon a time", 12
    reference_ids, reference_text = reference_generation(model_path, prompt, steps)
    assert reference_text.startswith(prompt.encode())
    # Invalid byte sequences come out as U+FFFD per maximal subpart, as Python's decoder does.
    expected_text = reference_text[len(prompt):].decode("utf-8", "replace")
    with ringserve.Client(model_daemon.socket) as client:
        assert client.info.has_vocab
        result = client.generate(prompt, steps, ignore_eos=True)
        assert result.tokens == reference_ids[-steps:]
        assert result.text == expected_text
        with client.stream(prompt, steps, ignore_eos=True) as request:
            pieces = list(request.text(timeout=30))
        assert "".join(pieces) == expected_text
        assert client.detokenize(client.tokenize("Hello, world")) == "Hello, world"
        ids = client.tokenize(prompt, bos=True)
        assert ids[0] == client.info.bos_token
        assert client.generate(ids, steps, ignore_eos=True).tokens == result.tokens


def test_threads_share_a_client(null_daemon):
    """Calls from several threads take turns on the connection (libringserve's connection
    is single-threaded); every answer reaches the thread that asked."""
    import threading
    errors = []

    def worker(seed):
        try:
            for i in range(200):
                prompt = [seed, i + 1]
                assert client.generate(prompt, 3, timeout=10).tokens == null_tokens(prompt, 3)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with ringserve.Client(null_daemon.socket) as client:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in (11, 22, 33)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors


def test_dropped_requests_give_their_slots_back(null_daemon):
    """A Request collected without release() is cancelled and released by the library:
    more requests than the daemon's 256 slots per client go through."""
    with ringserve.Client(null_daemon.socket) as client:
        for i in range(600):
            client.submit([i + 1], 1)  # dropped at once
            assert client.generate([i + 2], 1).tokens == null_tokens([i + 2], 1)
        running = [client.submit([i + 1], 4000) for i in range(8)]
        del running  # cancelled: the connection closes cleanly afterwards
        assert client.generate(PROMPT, 2).tokens == null_tokens(PROMPT, 2)


def test_blocking_wait_releases_the_gil(start_daemon):
    """A thread blocked in wait() lets the others run: here the main thread kills the
    daemon, which ends the wait. (A wait that held the GIL would keep the main thread out
    until the 4000-step request finished, 4 s later, with status 0.)"""
    import threading
    daemon = start_daemon("--null-delay-us", "1000")
    outcome = []
    entering = threading.Event()

    def waiter():
        with ringserve.Client(daemon.socket) as client:
            request = client.submit(PROMPT, 4000)
            entering.set()
            try:
                outcome.append(request.wait(timeout=30))
            except OSError as error:
                outcome.append(error)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert entering.wait(timeout=30)
    daemon.kill()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionError), outcome
