#!/usr/bin/python3
"""The round trip of a 1-token request from Python, beside the C client's.

Run by `make bench` (target bench-python). The C figures come from `ringserve-bench ipc`
run just before, on the same CPUs; then one ringserved (null engine, scheduler core pinned
like bench ipc's) serves the Python measurements:
  - Client.generate(ids, 1): submit, wait (busy-polling, the library's default spin),
    copy the one token into a list, release; compare with the C client's busy-polling
    round trip (bench ipc's "ringserve rings"). Target: within 5 us of it at p50.
  - AsyncClient.generate(ids, 1) in an asyncio loop on the event descriptor, beside the C
    client asleep in epoll (bench ipc's "client asleep in epoll"). Not the same thing:
    the asyncio client checks (rs_event_arm) before it sleeps, and with the null engine
    the answer is usually there by then, so it sleeps less often than the C sleeper.
Same request as bench ipc: 16 prompt tokens, a different prompt each time, 1 output token.

    tools/bench-python.py --build build [--json FILE] [--iterations N] [--quick]
"""
import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import ringserve

PROMPT_TOKENS = 16
TARGET_NS = 5000


def fill_prompt(seed):
    """bench_ipc.c's prompts: the same ids, so the daemon does the same work."""
    return [(seed * 131 + i * 7) % 32000 for i in range(PROMPT_TOKENS)]


def percentiles(samples):
    samples = sorted(samples)
    n = len(samples)
    return {"p50": samples[n // 2], "p99": samples[n * 99 // 100],
            "p999": samples[n * 999 // 1000], "mean": sum(samples) / n}


def start_daemon(build, socket_path, cpu):
    ready_read, ready_write = os.pipe()
    command = [os.path.join(build, "ringserved"), "--socket", socket_path, "--ready-fd",
               str(ready_write), "--null-vocab", "32000"]
    if cpu >= 0:
        command += ["--cpu", str(cpu)]
    process = subprocess.Popen(command, pass_fds=[ready_write], stderr=subprocess.DEVNULL)
    os.close(ready_write)
    readable, _, _ = select.select([ready_read], [], [], 30)
    up = bool(readable) and os.read(ready_read, 1) != b""
    os.close(ready_read)
    if not up:
        process.kill()
        raise SystemExit("bench-python: ringserved did not come up")
    return process


def measure_sync(socket_path, iterations, warmup):
    timings = []
    clock = time.perf_counter_ns
    with ringserve.Client(socket_path) as client:
        prompts = [fill_prompt(i) for i in range(iterations + warmup)]
        generate = client.generate
        for i, prompt in enumerate(prompts):
            start = clock()
            result = generate(prompt, 1)
            end = clock()
            if i >= warmup:
                timings.append(end - start)
        if len(result.tokens) != 1:
            raise SystemExit("bench-python: a request did not produce its token")
    return percentiles(timings)


def measure_async(socket_path, iterations, warmup):
    async def main():
        timings = []
        clock = time.perf_counter_ns
        async with await ringserve.AsyncClient.connect(socket_path) as client:
            for i in range(iterations + warmup):
                prompt = fill_prompt(i)
                start = clock()
                await client.generate(prompt, 1)
                end = clock()
                if i >= warmup:
                    timings.append(end - start)
        return percentiles(timings)

    return asyncio.run(main())


def c_figures(build, quick, client_cpu, daemon_cpu):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [os.path.join(build, "ringserve-bench"), "ipc", "--json", out.name,
                   "--client-cpu", str(client_cpu), "--daemon-cpu", str(daemon_cpu)]
        if quick:
            command.append("--quick")
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        data = json.load(open(out.name))
    return data.get("ipc", data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--json")
    parser.add_argument("--iterations", type=int, default=100000)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    iterations = 20000 if args.quick else args.iterations
    cpus = os.cpu_count() or 1
    client_cpu, daemon_cpu = (0, 1) if cpus >= 2 else (-1, -1)

    c = c_figures(args.build, args.quick, client_cpu, daemon_cpu)
    if client_cpu >= 0:
        os.sched_setaffinity(0, {client_cpu})
    directory = tempfile.mkdtemp(prefix="ringserve-bench-python-")
    socket_path = os.path.join(directory, "sock")
    daemon = start_daemon(args.build, socket_path, daemon_cpu)
    try:
        sync = measure_sync(socket_path, iterations, 1000)
        aio = measure_async(socket_path, max(iterations // 10, 1000), 100)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        os.rmdir(directory)

    c_ring, c_epoll = c["ring_rtt_ns"], c["epoll_sleeper_rtt_ns"]
    gap = sync["p50"] - c_ring["p50"]
    met = gap <= TARGET_NS
    print(f"bench python (client on CPU {client_cpu}, scheduler core on CPU {daemon_cpu}, "
          f"null engine; {sys.implementation.name} {sys.version.split()[0]})")
    print(f"  {'round trip, 16 tokens in, 1 out':<48} {'p50 ns':>10} {'p99 ns':>10} "
          f"{'p99.9 ns':>10}")
    rows = [("C client, busy-polling (bench ipc)", c_ring),
            ("Python Client.generate, busy-polling", sync),
            ("C client asleep in epoll (bench ipc)", c_epoll),
            ("Python AsyncClient.generate, asyncio loop *", aio)]
    for name, p in rows:
        print(f"  {name:<48} {p['p50']:>10.0f} {p['p99']:>10.0f} {p['p999']:>10.0f}")
    print(f"  target: Python within {TARGET_NS} ns of C at p50: +{gap:.0f} ns "
          f"{'met' if met else 'MISSED'}; asyncio {aio['p50'] - c_epoll['p50']:+.0f} ns "
          f"against the C epoll sleeper")
    print("  * the asyncio client looks (rs_event_arm) before it sleeps, and the daemon has\n"
          "    usually answered by then: it sleeps less often than the C epoll sleeper, which\n"
          "    never spins")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"client_cpu": client_cpu, "daemon_cpu": daemon_cpu,
                       "c_ring_rtt_ns": c_ring, "python_sync_rtt_ns": sync,
                       "c_epoll_sleeper_rtt_ns": c_epoll, "python_asyncio_rtt_ns": aio,
                       "python_minus_c_p50_ns": gap, "target_ns": TARGET_NS,
                       "target_met": met}, out, indent=1)
            out.write("\n")
        print(f"  written to {args.json}")


if __name__ == "__main__":
    main()
