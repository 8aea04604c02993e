"""Fixtures: a fresh server per test module, wiped before every test that uses a client.

``server``: one millrace process (temp data dir, ``--listen 127.0.0.1:0``,
``--enable-reset``) for the whole module; the port comes from its ready line.
``kinesis``: resets the server (``POST /moto-api/reset``) and returns a boto3 client, so
tests in a module are independent and can run in any order.
``make_server``: starts extra servers with their own arguments (crash tests), each
killed at teardown; ``ServerProcess.kill``/``restart`` SIGKILL and restart on the same data
directory.
"""

from __future__ import annotations

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import ServerProcess  # noqa: E402
import kinesis_util  # noqa: E402

# Never let a client pick up a developer's AWS profile, region or real credentials.
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

_server_ids = itertools.count()


def _new_server(tmp_path_factory, name: str, **kwargs) -> ServerProcess:
    base = tmp_path_factory.mktemp(f"{name}-{next(_server_ids)}")
    return ServerProcess(base / "data", base / "server.log", **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """A fresh millrace for the module. A module may set ``SERVER_ARGS`` (extra command-line
    arguments) or ``SERVER_CONFIG`` (TOML text for ``--config``)."""
    proc = _new_server(
        tmp_path_factory,
        request.module.__name__,
        extra_args=getattr(request.module, "SERVER_ARGS", []),
        config_text=getattr(request.module, "SERVER_CONFIG", None),
    )
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def endpoint(server) -> str:
    server.reset()
    return server.endpoint


@pytest.fixture
def kinesis(endpoint):
    return kinesis_util.client(endpoint)


@pytest.fixture
def make_server(tmp_path_factory, request):
    started: list[ServerProcess] = []

    def make(extra_args: list[str] | None = None, config_text: str | None = None) -> ServerProcess:
        proc = _new_server(tmp_path_factory, request.node.name[:40], extra_args=extra_args,
                           config_text=config_text)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show where the server's log is (and its tail)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "server" in getattr(item, "funcargs", {}):
        proc = item.funcargs["server"]
        report.sections.append(("millrace log", f"{proc.log_path}\n{proc.log_tail()}"))
