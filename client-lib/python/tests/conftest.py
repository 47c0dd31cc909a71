"""Fixtures: a real ringserved on a private socket (as tests/harness/harness.c starts one),
with the null engine or a small random model written by ringserve-mkmodel.

RS_BUILD_DIR names the build folder holding ringserved and the tools (default: build/ at
the top of the tree); `make test-python` sets it and puts the built package on PYTHONPATH."""
import os
import select
import signal
import subprocess

import pytest

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.path.abspath(os.environ.get("RS_BUILD_DIR", os.path.join(TOP, "build")))
NULL_VOCAB = 32000


class Daemon:
    def __init__(self, directory, args):
        self.socket = os.path.join(directory, "sock")
        ready_read, ready_write = os.pipe()
        command = [os.path.join(BUILD, "ringserved"), "--socket", self.socket,
                   "--ready-fd", str(ready_write), *args]
        self.process = subprocess.Popen(command, pass_fds=[ready_write])
        os.close(ready_write)
        # Ready when it writes its byte; EOF (it died) or 30 s fail the test.
        readable, _, _ = select.select([ready_read], [], [], 30)
        byte = os.read(ready_read, 1) if readable else b""
        os.close(ready_read)
        if not byte:
            self.kill()
            pytest.fail("ringserved did not come up (see its messages above)")
        if self.process.poll() is not None:
            pytest.fail(f"ringserved exited with {self.process.returncode}")

    def kill(self):
        """SIGKILL: the daemon dies without a word to its clients."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(*args) -> Daemon with the null engine (args: extra ringserved options)."""
    started = []

    def start(*args):
        directory = tmp_path / f"daemon{len(started)}"
        directory.mkdir()
        daemon = Daemon(str(directory), ["--null-vocab", str(NULL_VOCAB), *args])
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def null_daemon(start_daemon):
    return start_daemon()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "model.gguf")
    subprocess.run([os.path.join(BUILD, "ringserve-mkmodel"), "--out-gguf", path, "--seed", "5"],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    return path


@pytest.fixture
def model_daemon(start_daemon, model_path):
    return start_daemon("--model", model_path, "--backend", "cpu", "--threads", "1")


def null_token(prompt, index, vocab_size=NULL_VOCAB):
    """The null engine's token, from its definition in docs/shm-abi.md (FNV-1a of the
    prompt, splitmix64 of hash + index), independent of the daemon's code."""
    mask = (1 << 64) - 1
    h = 14695981039346656037
    for t in prompt:
        h = ((h ^ t) * 1099511628211) & mask
    z = (h + index + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z % vocab_size


def null_tokens(prompt, count):
    return [null_token(prompt, i) for i in range(count)]
