"""The web console at /console in headless Chromium (Debian's chromium and chromedriver,
driven by Selenium): each page loads, the shard map draws the lineage of a split, live
charts are drawn from traffic the test makes, the record browser shows the records the
test wrote (decoded as JSON, UTF-8 and hex), and delivery streams show their deliveries.
Also the AWS/Firehose counters on GET /metrics after a delivery into the S3 server; the
analytics pages (list, SQL code, inputs and outputs); the video pages (list, fragments) and
live playback of an ffmpeg upload through HLS with Media Source Extensions; and the sign-in
form against a server with credentials (a wrong secret refused, the right one signs every
call with SigV4 in the browser, signing out forgets the keys).

Screenshots go to TARGET_DIR/test-artifacts/console/ (TARGET_DIR: where MILLRACE_BIN is).
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

import kinesis_util
from firehose_util import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server
from harness import ServerProcess, millrace_bin, wait_until
from kinesis_util import create_active, list_all_shards, wait_status

CHROMIUM = os.environ.get("MILLRACE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MILLRACE_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 20.0
ROLE = "arn:aws:iam::000000000000:role/firehose"


def artifacts_dir() -> Path:
    path = Path(millrace_bin()).resolve().parent.parent / "test-artifacts" / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("console")
    s3 = S3Server(base / "s3", base / "s3.log").start()
    config = f"""
[firehose]
s3_endpoint = "{s3.endpoint}"
s3_region = "us-east-1"
s3_access_key_id = "{S3_ACCESS_KEY}"
s3_secret_access_key = "{S3_SECRET_KEY}"
"""
    server = ServerProcess(base / "data", base / "server.log", extra_args=["--enable-clock-advance"],
                           config_text=config).start()
    yield server, s3
    server.close()
    s3.stop()


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must download nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def wait_js(driver, script: str, what: str, *args):
    return wait_until(lambda: js(driver, script, *args), WAIT_S, what, interval_s=0.1)


def screenshot(driver, name: str) -> None:
    driver.save_screenshot(str(artifacts_dir() / f"{name}.png"))


def canvas_ink(driver, selector: str, line_rgb: tuple[int, int, int] | None = None) -> int:
    """Pixels of a canvas that are not transparent; with ``line_rgb``, only pixels of about
    that colour (a chart's line, not its grid or labels)."""
    return js(driver, """
        const c = document.querySelector(arguments[0]), want = arguments[1];
        if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3] === 0) continue;
            if (!want || (Math.abs(d[i] - want[0]) < 40 && Math.abs(d[i + 1] - want[1]) < 40
                          && Math.abs(d[i + 2] - want[2]) < 40 && d[i + 3] > 200)) n++;
        }
        return n;""", selector, list(line_rgb) if line_rgb else None)


def test_streams_stream_detail_charts_and_record_browser(env, browser):
    server, _ = env
    server.reset()
    kinesis = kinesis_util.client(server.endpoint)
    name = f"console-{uuid.uuid4().hex[:8]}"
    create_active(kinesis, name, shard_count=2)
    # A split, so the shard map has lineage to draw: shard 1 closes, 2 and 3 are its children.
    shard_1 = next(s for s in list_all_shards(kinesis, name) if s["ShardId"].endswith("1"))
    low, high = int(shard_1["HashKeyRange"]["StartingHashKey"]), int(shard_1["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(StreamName=name, ShardToSplit=shard_1["ShardId"], NewStartingHashKey=str((low + high) // 2))
    wait_status(kinesis, name, "ACTIVE")
    # Records in shard 0 (hash key 0), in this order: JSON, UTF-8 text, binary.
    written = [json.dumps({"order": 1, "item": "millstone"}).encode(), "plain text ✓".encode(), bytes([0, 159, 146, 150, 255])]
    for data in written:
        kinesis.put_record(StreamName=name, Data=data, PartitionKey="p", ExplicitHashKey="0")

    browser.get(f"{server.endpoint}/console?poll=300")
    wait_js(browser, "return document.querySelector(`#streams tr[data-stream='${arguments[0]}']`)",
            f"the streams page to list {name}", name)
    row = browser.find_element("css selector", f"#streams tr[data-stream='{name}']")
    assert "ACTIVE" in row.text and "PROVISIONED" in row.text
    assert re.search(r"\b3\b", row.text), f"3 open shards expected in {row.text!r}"
    screenshot(browser, "streams")

    # Live traffic while the stream page is open, so its charts have something to draw.
    stop = threading.Event()
    n_produced = [0]

    def produce():
        producer = kinesis_util.client(server.endpoint)
        while not stop.is_set():
            producer.put_records(StreamName=name, Records=[
                {"Data": json.dumps({"tick": n_produced[0], "i": i}).encode(), "PartitionKey": f"k{i}"}
                for i in range(20)])
            n_produced[0] += 1
            stop.wait(0.05)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        browser.get(f"{server.endpoint}/console?poll=300#/stream/{name}")
        wait_js(browser, "const c = document.querySelector('#chart-in'); return c && Number(c.dataset.max) > 0 && Number(c.dataset.points) >= 8",
                "the throughput chart to show incoming records over a few samples")
        # The records/s line is drawn in #1f6feb: a line across the chart, not a dot.
        assert canvas_ink(browser, "#chart-in", (0x1f, 0x6f, 0xeb)) > 50, "the throughput chart drew no line"
        wait_js(browser, "return document.querySelector('#total-in').textContent !== '–'", "a records-in total")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert n_produced[0] > 0
    assert js(browser, "return document.querySelectorAll('svg.shards g.shard.open').length") == 3
    assert js(browser, "return document.querySelectorAll('svg.shards g.shard.closed').length") == 1
    assert js(browser, "return document.querySelectorAll('svg.shards path').length") == 2, "two lineage edges"
    for chart in ("#chart-throttle", "#chart-age", "#chart-out"):
        assert canvas_ink(browser, chart) > 0, f"{chart} not drawn"
    screenshot(browser, "stream")

    # The record browser, from TRIM_HORIZON of shard 0.
    js(browser, "document.querySelector('#rb-shard').value = 'shardId-000000000000'")
    js(browser, "document.querySelector('#rb-limit').value = '3'")
    browser.find_element("css selector", "#rb-read").click()
    wait_js(browser, "return document.querySelectorAll('#records tr.record').length === 3", "three records in the browser")
    rows = browser.find_elements("css selector", "#records tr.record")
    assert "json" in rows[0].text and '"item": "millstone"' in rows[0].text
    assert "utf8" in rows[1].text and "plain text ✓" in rows[1].text
    assert "hex" in rows[2].text and "00 9f 92 96 ff" in rows[2].text
    browser.execute_script("document.querySelector('#browser').scrollIntoView()")
    screenshot(browser, "record-browser")
    # Hex for everything when asked.
    js(browser, "document.querySelector('#rb-decode').value = 'hex'")
    browser.find_element("css selector", "#rb-read").click()
    wait_js(browser, "const r = document.querySelectorAll('#records tr.record'); return r.length === 3 && r[1].textContent.includes('70 6c 61 69 6e')",
            "the UTF-8 record shown as hex")
    # Next page continues after the three: the producer's JSON records (half the hash-key
    # space is shard 0's, so some of its 20 keys land there).
    js(browser, "document.querySelector('#rb-decode').value = 'auto'")
    js(browser, "document.querySelector('#rb-limit').value = '50'")
    browser.find_element("css selector", "#rb-next").click()
    wait_js(browser, "const r = document.querySelectorAll('#records tr.record'); return r.length > 0 && r[0].textContent.includes('\"tick\"')",
            "the next page to show the producer's records")


def test_firehose_page_and_metrics(env, browser):
    server, s3 = env
    server.reset()
    firehose = kinesis_util.client(server.endpoint, service="firehose")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    name = f"orders-{uuid.uuid4().hex[:6]}"
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={"BucketARN": f"arn:aws:s3:::{bucket}", "RoleARN": ROLE,
                                            "Prefix": "orders/",
                                            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}})
    answer = firehose.put_record_batch(DeliveryStreamName=name,
                                       Records=[{"Data": f'{{"n":{i}}}\n'.encode()} for i in range(25)])
    assert answer["FailedPutCount"] == 0
    request = urllib.request.Request(f"{server.endpoint}/millrace-api/advance-clock?ms=61000", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    wait_until(lambda: s3.keys(bucket), WAIT_S, f"an object in s3://{bucket}")

    def counter(metric: str) -> float | None:
        with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
            text = response.read().decode()
        pattern = rf'^millrace_firehose_{metric}_total\{{account="000000000000",region="us-east-1",delivery_stream_name="{name}"\}} (\S+)$'
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else None

    assert counter("incoming_records") == 25
    wait_until(lambda: counter("delivery_to_s3_records") == 25, WAIT_S, "DeliveryToS3.Records = 25")

    browser.get(f"{server.endpoint}/console?poll=300#/firehose")
    wait_js(browser, "return document.querySelector(`#delivery tr[data-name='${arguments[0]}']`)", f"{name} listed", name)
    wait_js(browser, "const r = document.querySelector(`#delivery tr[data-name='${arguments[0]}']`); return r.querySelector('.out').textContent === '25'",
            "25 records delivered shown", name)
    row = browser.find_element("css selector", f"#delivery tr[data-name='{name}']")
    assert "ACTIVE" in row.text and bucket in row.text and "orders/" in row.text
    screenshot(browser, "firehose")


def test_console_assets_and_unknown_paths(env):
    server, _ = env
    for path, kind in (("/console", "text/html"), ("/console/app.js", "application/javascript"),
                       ("/console/style.css", "text/css"), ("/console/api/metrics", "application/json")):
        with urllib.request.urlopen(f"{server.endpoint}{path}", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith(kind), path
            body = response.read()
            assert b"http://" not in body or path == "/console/api/metrics", f"{path} must load nothing from elsewhere"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.endpoint}/console/nope", timeout=10)
    assert info.value.code == 404


FFMPEG_SHORT_MKV = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-t", "4",
    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
    "-profile:v", "baseline", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0",
    "-f", "matroska", "-live", "1", "-cluster_time_limit", "10000",
    "-cluster_size_limit", "50000000", "-",
]

PASSTHROUGH_SQL = """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001";"""


def test_analytics_pages(env, browser):
    from test_analytics import input_config, output_config

    server, _ = env
    server.reset()
    kinesis = kinesis_util.client(server.endpoint)
    ka = kinesis_util.client(server.endpoint, service="kinesisanalytics")
    source, dest = f"src-{uuid.uuid4().hex[:6]}", f"dst-{uuid.uuid4().hex[:6]}"
    create_active(kinesis, source, shard_count=1)
    create_active(kinesis, dest, shard_count=1)
    name = f"app-{uuid.uuid4().hex[:6]}"
    ka.create_application(ApplicationName=name, Inputs=[input_config(source)],
                          Outputs=[output_config("DESTINATION_SQL_STREAM", dest)],
                          ApplicationCode=PASSTHROUGH_SQL)
    browser.get(f"{server.endpoint}/console?poll=300#/analytics")
    wait_js(browser, "return document.querySelector(`#applications tr[data-name='${arguments[0]}']`)",
            f"{name} listed", name)
    assert "READY" in browser.find_element("css selector", f"#applications tr[data-name='{name}']").text
    screenshot(browser, "analytics")
    browser.get(f"{server.endpoint}/console?poll=300#/analytics/{name}")
    wait_js(browser, "return document.querySelector('#sql')", "the SQL code shown")
    assert 'CREATE OR REPLACE PUMP "STREAM_PUMP"' in browser.find_element("css selector", "#sql").text
    inputs = browser.find_element("css selector", "#inputs").text
    outputs = browser.find_element("css selector", "#outputs").text
    assert source in inputs and "SOURCE_SQL_STREAM_001" in inputs
    assert dest in outputs and "DESTINATION_SQL_STREAM" in outputs
    screenshot(browser, "analytics-application")


def test_video_pages_and_playback(env, browser):
    import subprocess
    import time

    from test_video import put_media

    server, _ = env
    server.reset()
    kvs = kinesis_util.client(server.endpoint, service="kinesisvideo")
    name = f"cam-{uuid.uuid4().hex[:6]}"
    kvs.create_stream(StreamName=name, DataRetentionInHours=24, MediaType="video/h264")
    ffmpeg = subprocess.Popen(FFMPEG_SHORT_MKV, stdout=subprocess.PIPE)
    try:
        acks = put_media(server.endpoint, name, ffmpeg.stdout, time.time() - 30)
    finally:
        ffmpeg.stdout.close()
        assert ffmpeg.wait(timeout=60) == 0
    n_persisted = [a["EventType"] for a in acks].count("PERSISTED")
    assert n_persisted >= 2, acks

    browser.get(f"{server.endpoint}/console?poll=300#/video")
    wait_js(browser, "return document.querySelector(`#video-streams tr[data-name='${arguments[0]}']`)",
            f"{name} listed", name)
    wait_js(browser, "const r = document.querySelector(`#video-streams tr[data-name='${arguments[0]}']`);"
                     "return r.querySelector('.frags').textContent === arguments[1]",
            "the fragments counted", name, str(n_persisted))
    screenshot(browser, "video")
    browser.get(f"{server.endpoint}/console?poll=300#/video/{name}")
    wait_js(browser, "return document.querySelectorAll('#fragments tr.fragment').length === arguments[0]",
            "every fragment listed", n_persisted)
    browser.find_element("css selector", "#play").click()
    wait_js(browser, "const v = document.querySelector('#player');"
                     "return v.dataset.supported !== undefined || v.dataset.error !== undefined",
            "the player read the init segment")
    supported = js(browser, "return document.querySelector('#player').dataset.supported")
    codec = js(browser, "return document.querySelector('#player').dataset.codec")
    assert codec and codec.startswith('video/mp4; codecs="avc1.42'), codec  # baseline profile
    assert supported == "true", f"headless Chromium cannot play {codec} with MSE"
    wait_js(browser, "return Number(document.querySelector('#player').dataset.segments || 0) >= arguments[0]",
            "every fragment appended", n_persisted)
    wait_js(browser, "const v = document.querySelector('#player');"
                     "return v.buffered.length > 0 && v.buffered.end(0) > 1", "video buffered")
    wait_js(browser, "const v = document.querySelector('#player');"
                     "return !v.paused && v.currentTime > v.buffered.start(0) + 0.2", "the video playing")
    screenshot(browser, "video-playback")


ADMIN_KEY = ("AKIDCONSOLEADMIN0001", "console-admin-secret")

SECURE_CONFIG = f"""
[[credential]]
access_key_id = "{ADMIN_KEY[0]}"
secret_access_key = "{ADMIN_KEY[1]}"
principal = "arn:aws:iam::000000000000:user/console"

[[policy]]
name = "console"
principals = ["arn:aws:iam::000000000000:user/console"]
document = '{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}}]}}'
"""


def test_console_signs_in_against_a_server_with_credentials(tmp_path, browser):
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", config_text=SECURE_CONFIG).start()
    try:
        import boto3
        from botocore.config import Config

        kinesis = boto3.client("kinesis", endpoint_url=server.endpoint, region_name="us-east-1",
                               aws_access_key_id=ADMIN_KEY[0], aws_secret_access_key=ADMIN_KEY[1],
                               config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
        name = f"secure-{uuid.uuid4().hex[:6]}"
        create_active(kinesis, name, shard_count=1)
        browser.get(f"{server.endpoint}/console?poll=300#/")
        js(browser, "sessionStorage.clear()")
        browser.refresh()
        wait_js(browser, "return document.querySelector('#login')", "the sign-in form")
        screenshot(browser, "sign-in")
        # A wrong secret: refused, the form again, with the server's error.
        browser.find_element("css selector", "#login-key").send_keys(ADMIN_KEY[0])
        browser.find_element("css selector", "#login-secret").send_keys("wrong")
        browser.find_element("css selector", "#login-submit").click()
        wait_js(browser, "return (document.querySelector('#login-error') || {}).textContent"
                         "?.includes('InvalidSignatureException')", "the signature refused")
        browser.find_element("css selector", "#login-key").send_keys(ADMIN_KEY[0])
        browser.find_element("css selector", "#login-secret").send_keys(ADMIN_KEY[1])
        browser.find_element("css selector", "#login-submit").click()
        wait_js(browser, "return document.querySelector(`#streams tr[data-stream='${arguments[0]}']`)",
                f"{name} listed with signed calls", name)
        assert ADMIN_KEY[0] in browser.find_element("css selector", "#signed-in").text
        assert ADMIN_KEY[1] not in browser.page_source
        browser.get(f"{server.endpoint}/console?poll=300#/stream/{name}")
        wait_js(browser, "return document.querySelector('#rb-read')", "the stream page")
        screenshot(browser, "signed-in-stream")
        # Signing out forgets the keys: the server refuses again.
        browser.find_element("css selector", "#logout").click()
        wait_js(browser, "return document.querySelector('#login')", "the sign-in form after signing out")
        assert js(browser, "return sessionStorage.getItem('millrace.credentials')") is None
    finally:
        server.close()
