"""Real components for the Firehose suites: an S3 server, PostgreSQL, an HTTP endpoint that
records what it receives, and a Lambda-style transformation function.

* ``S3Server``: ``s3s-fs`` (the s3s project's file-system S3 server, built from crates.io
  in the workspace as ``millrace-s3-server``; ``MILLRACE_S3S_FS`` names the binary), with an access key, read back with
  boto3's S3 client.
* ``Postgres``: a private cluster of Debian's PostgreSQL in a temporary directory, started
  with ``initdb``/``pg_ctl`` as the ``postgres`` user when the tests run as root (PostgreSQL
  refuses to run as root), listening on 127.0.0.1 on a free port, trust authentication.
* ``Endpoint``: an HTTP server that records every request (headers, decoded body) and
  answers as the test tells it (200 echoing the request id, 500, 413, a wrong body).
* ``Function``: answers the Firehose Lambda contract: upper-cases the data, returns the
  record's ``customer`` as partition key, drops records containing "drop" and fails those
  containing "fail".

Every process is stopped by its ``stop``; nothing sleeps in place of a condition.
"""

from __future__ import annotations

import base64
import glob
import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
from botocore.config import Config

from harness import free_port, wait_until

S3_ACCESS_KEY = "MILLRACES3KEY"
S3_SECRET_KEY = "millrace-s3-secret"
START_TIMEOUT_S = 30.0


def s3s_fs_bin() -> str:
    configured = os.environ.get("MILLRACE_S3S_FS")
    if configured:
        return configured
    found = shutil.which("millrace-s3-server") or shutil.which("s3s-fs")
    if found is None:
        raise RuntimeError(
            "no S3 server: run scripts/test.sh (it builds target/release/millrace-s3-server), or set MILLRACE_S3S_FS"
        )
    return found


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3Server:
    def __init__(self, root: Path, log_path: Path):
        self.root = Path(root)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [s3s_fs_bin(), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, str(self.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, START_TIMEOUT_S,
                   "s3s-fs to listen")
        assert self.process.poll() is None, f"s3s-fs exited: {self.log_path.read_text()[-2000:]}"
        return self

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        s3 = self.client()
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def postgres_bin_dir() -> Path:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed: run scripts/test.sh (it installs Debian's postgresql)")
    return Path(dirs[-1])


class Postgres:
    """A private PostgreSQL cluster; ``psql`` runs SQL as the ``postgres`` superuser."""

    def __init__(self):
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="millrace-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as the package's user.
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def run(self, *args: str) -> str:
        out = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{args[0]} failed: {out.stdout}\n{out.stderr}"
        return out.stdout

    def start(self) -> "Postgres":
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                 "-o", options, "-w", "start")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, f"psql failed: {out.stderr}"
        return out.stdout.strip()

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Endpoint:
    """Records requests; ``mode`` is "ok", "500", "413" or "bad-body"."""

    def __init__(self):
        self.requests: list[dict] = []
        self.mode = "ok"
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                parsed = json.loads(body)
                with owner.lock:
                    mode = owner.mode
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": parsed,
                                           "mode": mode})
                if mode == "ok":
                    status, answer = 200, {"requestId": parsed["requestId"], "timestamp": int(time.time() * 1000)}
                elif mode == "bad-body":
                    status, answer = 200, {"requestId": "not-the-same", "timestamp": 0}
                else:
                    status, answer = int(mode), {"requestId": parsed["requestId"], "errorMessage": "nope"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ingest"

    def clear(self, mode: str = "ok") -> None:
        with self.lock:
            self.requests.clear()
            self.mode = mode

    def records(self, accepted_only: bool = False) -> list[bytes]:
        """The records of every request (only those answered 200 with ``accepted_only``)."""
        with self.lock:
            return [base64.b64decode(r["data"]) for req in self.requests for r in req["body"]["records"]
                    if not accepted_only or req["mode"] == "ok"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Function(Endpoint):
    """A transformation function with the Lambda contract."""

    def __init__(self):
        self.invocations: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                owner.invocations.append(event)
                records = []
                for record in event["records"]:
                    data = base64.b64decode(record["data"])
                    if b"drop" in data:
                        records.append({"recordId": record["recordId"], "result": "Dropped"})
                        continue
                    if b"fail" in data:
                        records.append({"recordId": record["recordId"], "result": "ProcessingFailed",
                                        "data": record["data"]})
                        continue
                    try:
                        customer = str(json.loads(data).get("customer", "none"))
                    except ValueError:
                        customer = "none"
                    records.append({
                        "recordId": record["recordId"], "result": "Ok",
                        "data": base64.b64encode(data.upper()).decode(),
                        "metadata": {"partitionKeys": {"customer": customer}},
                    })
                answer = json.dumps({"records": records}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/transform"
