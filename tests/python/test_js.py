"""The AWS SDK for JavaScript v3 suites (tests/js), run with node against a fresh server.

Each script runs its checks in order, prints one line per check and exits non-zero on
any failure. The SDK's default request handler is HTTP/2 with prior knowledge on http://.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_TIMEOUT_S = 120


@pytest.mark.parametrize("script", ["round_trip.mjs", "subscribe_to_shard.mjs"])
def test_js_sdk(endpoint, script):
    assert (JS_DIR / "node_modules" / "@aws-sdk" / "client-kinesis").is_dir(), \
        "tests/js/node_modules is missing: run scripts/test.sh (npm ci in tests/js)"
    env = dict(os.environ)
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(var, None)
    env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"  # CI has Node 20 on purpose
    result = subprocess.run(["node", script, endpoint], cwd=JS_DIR, env=env, capture_output=True, text=True,
                            timeout=NODE_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node {script} failed ({result.returncode}):\n{output}"
    assert " 0 failed" in result.stdout, output
