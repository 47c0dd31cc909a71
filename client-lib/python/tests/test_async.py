"""The asyncio client against a real ringserved. Every test runs under a timeout, so a
lost wake-up fails the test instead of hanging it."""
import asyncio
import errno
import threading
import time

import pytest

import ringserve
from conftest import null_tokens

PROMPT = [1, 15043, 3186, 29991]
LIMIT_S = 20


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, LIMIT_S))


def test_async_generate(null_daemon):
    async def main():
        async with await ringserve.AsyncClient.connect(null_daemon.socket) as client:
            result = await client.generate(PROMPT, 8)
            assert result.tokens == null_tokens(PROMPT, 8)
            assert result.completion.status == 0
            request = client.submit(PROMPT, 4)
            completion = await request.wait()
            assert completion.output_len == 4
            with request.output() as view:
                assert view.tolist() == null_tokens(PROMPT, 4)
            await request.release()

    run(main())


def test_two_tasks_stream_concurrently(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")  # one step (a token each) per ms
    prompts = [[7, 8, 9], [10, 11, 12, 13]]
    count = 60
    arrivals = []  # (stream, index) in the order the tasks saw them

    async def consume(client, which):
        received = []
        async with client.stream(prompts[which], count) as request:
            async for token in request:
                arrivals.append(which)
                received.append(token)
        return received

    async def main():
        async with await ringserve.AsyncClient.connect(daemon.socket) as client:
            threads = threading.active_count()
            started = time.process_time(), time.monotonic()
            results = await asyncio.gather(consume(client, 0), consume(client, 1))
            cpu, wall = time.process_time() - started[0], time.monotonic() - started[1]
            assert threading.active_count() == threads  # no helper thread
            return results, cpu, wall

    (first, second), cpu, wall = run(main())
    print(f"cpu {cpu:.4f} s, wall {wall:.4f} s")
    assert first == null_tokens(prompts[0], count)
    assert second == null_tokens(prompts[1], count)
    # Concurrent, not one after the other: each stream got tokens before the other ended.
    assert arrivals.index(1) < len(arrivals) - 1 - arrivals[::-1].index(0)
    assert arrivals.index(0) < len(arrivals) - 1 - arrivals[::-1].index(1)
    # Asleep in the event loop between tokens, not spinning: the 60 steps take >= 60 ms of
    # wall time (--null-delay-us), and a spinning client would burn all of it on its CPU.
    assert wall >= 0.06
    assert cpu < 0.8 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s"


def test_async_text_stream(model_daemon):
    async def main():
        async with await ringserve.AsyncClient.connect(model_daemon.socket) as client:
            whole = await client.generate("Once upon a time", 12, ignore_eos=True)
            async with client.stream("Once upon a time", 12, ignore_eos=True) as request:
                pieces = [piece async for piece in request.text()]
            assert "".join(pieces) == whole.text
            assert whole.text  # 12 tokens of a 512-token vocabulary spell something

    run(main())


def test_async_cancel(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")

    async def main():
        async with await ringserve.AsyncClient.connect(daemon.socket) as client:
            request = client.stream(PROMPT, 4000)
            received = []

            async def consume():
                async for token in request:
                    received.append(token)
                    if len(received) == 3:
                        canceller.set()

            canceller = asyncio.Event()
            task = asyncio.ensure_future(consume())
            await canceller.wait()
            request.cancel()
            with pytest.raises(ringserve.RequestCancelled):
                await task
            completion = request.completion()
            assert completion.status == -errno.ECANCELED
            assert 3 <= completion.output_len < 4000
            assert received == null_tokens(PROMPT, len(received))
            await request.release()
            # The connection goes on.
            assert (await client.generate(PROMPT, 2)).tokens == null_tokens(PROMPT, 2)

    run(main())


def test_async_daemon_dies_mid_stream(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")

    async def main():
        client = await ringserve.AsyncClient.connect(daemon.socket)
        requests = [client.stream(PROMPT, 4000), client.stream([5, 6], 4000)]
        got_first = [asyncio.Event(), asyncio.Event()]

        async def consume(which):
            async for _ in requests[which]:
                got_first[which].set()

        tasks = [asyncio.ensure_future(consume(0)), asyncio.ensure_future(consume(1))]
        await got_first[0].wait()
        await got_first[1].wait()
        daemon.kill()
        for task in tasks:  # both streams end with the error, neither hangs
            with pytest.raises(ConnectionError) as caught:
                await task
            assert caught.value.errno in (errno.ECONNRESET, errno.EHOSTDOWN)
        with pytest.raises(ConnectionError):
            await requests[0].wait()
        client.close()

    run(main())


def test_async_close_wakes_waiting_tasks(start_daemon):
    daemon = start_daemon("--null-delay-us", "1000")

    async def main():
        client = await ringserve.AsyncClient.connect(daemon.socket)
        request = client.stream(PROMPT, 4000)
        started = asyncio.Event()

        async def consume():
            async for _ in request:
                started.set()

        task = asyncio.ensure_future(consume())
        await started.wait()
        view = request.output()
        with pytest.raises(BufferError):  # a view pins the connection: nothing changes
            client.close()
        view.release()
        assert not task.done()
        client.close()
        with pytest.raises(ConnectionAbortedError):
            await task
        with pytest.raises(ValueError):
            client.submit(PROMPT, 1)

    run(main())


def test_async_idle_waiters_sleep_while_another_streams(start_daemon):
    # One seat (--max-batch 1): a 40-token stream runs while 100 requests queue behind it.
    # Each waiting task wants its own completion only, so it is woken at most once (when
    # its request completes); the stream at most once per token. Waking every waiter on
    # every event would cost about 100 x 40 wake-ups here.
    daemon = start_daemon("--max-batch", "1", "--null-delay-us", "1000")
    waiting, length = 100, 40

    async def main():
        async with await ringserve.AsyncClient.connect(daemon.socket) as client:
            stream = client.stream(PROMPT, length)
            queued = [client.submit([5 + i, 6], 1) for i in range(waiting)]
            waits = [asyncio.ensure_future(request.wait()) for request in queued]
            got = [token async for token in stream]
            completions = await asyncio.gather(*waits)
            assert got == null_tokens(PROMPT, length)
            assert all(c.status == 0 and c.output_len == 1 for c in completions)
            wakeups = client._dispatcher().wakeups
            assert wakeups <= waiting + length + 1, f"{wakeups} wake-ups"
            for request in queued:
                await request.release()
            await stream.release()

    run(main())
