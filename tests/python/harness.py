"""Start, stop, kill and restart the server under test, and small waiting helpers.

The suites drive a real `millrace` process (``MILLRACE_BIN``, set by scripts/test.sh) with
real clients. ``MILLRACE_TEST_TARGET=moto`` runs them against ``moto_server`` instead: that
is only a way to debug a suite's own logic when no millrace binary exists; moto keeps no
data across restarts and differs from AWS in many messages, so many tests fail there.

Nothing here sleeps in place of a condition: every wait polls a condition under a
deadline and fails with a message saying what it waited for.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

READY_LINE = re.compile(r"^millrace listening on (\S+):(\d+)\s*$")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_BYTES = 4000

T = TypeVar("T")


def target() -> str:
    """Which server the suites run against: "millrace" (the default) or "moto"."""
    value = os.environ.get("MILLRACE_TEST_TARGET", "millrace")
    if value not in ("millrace", "moto"):
        raise RuntimeError(f"MILLRACE_TEST_TARGET must be millrace or moto, not {value!r}")
    return value


def millrace_bin() -> str:
    path = os.environ.get("MILLRACE_BIN")
    if not path:
        raise RuntimeError(
            "MILLRACE_BIN is not set: run scripts/test.sh, or export MILLRACE_BIN=/abs/path/to/millrace"
        )
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"MILLRACE_BIN={path} is not an executable file")
    return path


def venv_bin(name: str) -> str:
    """A console script installed beside the running Python (the .venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found beside {sys.executable} nor on PATH")
    return found


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Polls ``condition`` until it returns a truthy value; returns that value.

    Fails with ``what`` and the last value seen when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        last = condition()
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")
        time.sleep(interval_s)


def http_get_status(url: str, timeout_s: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class ServerProcess:
    """One server process on one data directory; ``restart`` reuses the directory."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: list[str] | None = None,
                 config_text: str | None = None, enable_reset: bool = True, kind: str | None = None):
        self.kind = kind or target()  # "millrace" or "moto"
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args or [])
        self.config_text = config_text
        self.enable_reset = enable_reset
        self.process: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._log_file = None
        self._drain: threading.Thread | None = None
        self.starts_n = 0

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://{self.host}:{self.port}"

    def log_tail(self) -> str:
        """The end of the log of the latest start, without backtrace frames."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        text = text[text.rfind("\n=== start #"):]
        lines = [line for line in text.splitlines()
                 if not re.match(r"^\s+(at |\d+: )", line)]
        return "\n".join(lines)[-LOG_TAIL_BYTES:]

    def command(self) -> list[str]:
        if self.kind == "moto":
            self.port = free_port()
            return [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        cmd = [millrace_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        if self.enable_reset:
            cmd.append("--enable-reset")
        if self.config_text is not None:
            config_path = self.data_dir.parent / f"{self.data_dir.name}.toml"
            config_path.write_text(self.config_text)
            cmd += ["--config", str(config_path)]
        return cmd + self.extra_args

    def start(self) -> "ServerProcess":
        assert self.process is None or self.process.poll() is not None, "already running"
        # The server creates its data directory itself (mode 0700; the security suite checks
        # it); only the parent, where the config file goes, is made here.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self.starts_n += 1
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n=== start #{self.starts_n}: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        env = dict(os.environ)
        env.setdefault("MILLRACE_LOG", "info")
        env.setdefault("MOTO_ACCOUNT_ID", "000000000000")  # moto's default differs from millrace's
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log_file, env=env,
        )
        if self.kind == "moto":
            self._drain = threading.Thread(target=self._copy_rest, args=(self.process.stdout,), daemon=True)
            self._drain.start()
            wait_until(lambda: http_get_status(f"{self.endpoint}/moto-api/") == 200 or self._died(),
                       START_TIMEOUT_S, "moto_server to answer")
            if self._died():
                raise AssertionError(f"moto_server exited: {self.log_tail()}")
            return self
        first_line: "queue.Queue[str | None]" = queue.Queue()
        self._drain = threading.Thread(target=self._read_ready_then_copy,
                                       args=(self.process.stdout, first_line), daemon=True)
        self._drain.start()
        try:
            line = first_line.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"millrace printed no ready line within {START_TIMEOUT_S}s; log:\n{self.log_tail()}")
        if line is None:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError(f"millrace exited with {code} before it was ready; log:\n{self.log_tail()}")
        match = READY_LINE.match(line)
        if match is None:
            self.kill()
            raise AssertionError(f"unexpected first line on millrace's stdout: {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _read_ready_then_copy(self, stream, first_line: "queue.Queue[str | None]") -> None:
        raw = stream.readline()
        first_line.put(raw.decode("utf-8", "replace") if raw else None)
        if raw:
            self._log_file.write(b"stdout: " + raw)
        self._copy_rest(stream)

    def _copy_rest(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            try:
                self._log_file.write(b"stdout: " + raw)
                self._log_file.flush()
            except ValueError:  # log closed after the process ended
                return

    def _finish(self) -> None:
        if self._drain is not None:
            self._drain.join(timeout=STOP_TIMEOUT_S)
            self._drain = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or checkpoint anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self._finish()

    def stop(self) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"server did not exit within {STOP_TIMEOUT_S}s of SIGTERM; log:\n{self.log_tail()}")
        self._finish()
        return self.process.returncode

    def restart(self) -> "ServerProcess":
        """Starts again on the same data directory (a new port)."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        return self.start()

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, f"reset answered {response.status}"

    def close(self) -> None:
        """Teardown: graceful stop, SIGKILL if that does not work."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self._finish()


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def kcl_jars_dir() -> Path:
    """The jars kclpy-ext bundles: KCL 3, the MultiLangDaemon and the AWS SDK for Java v2."""
    import amazon_kclpy

    jars = Path(amazon_kclpy.__file__).resolve().parent / "jars"
    assert any(jars.glob("kinesis-2.*.jar")), f"no AWS SDK for Java v2 jars in {jars}"
    return jars


def java_classes_dir() -> Path:
    """Where scripts/test.sh compiled tests/java (MILLRACE_JAVA_CLASSES, else target/java-tests/classes)."""
    configured = os.environ.get("MILLRACE_JAVA_CLASSES")
    if configured:
        return Path(configured)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", repo_root() / "target"))
    return target_dir / "java-tests" / "classes"
