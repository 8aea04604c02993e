"""Kinesis Video Streams: control plane, PutMedia, GetMedia, archived media, HLS, DASH, clips.

Real tools only: ffmpeg makes H.264 in MKV (a 2-second keyframe interval, one cluster per
keyframe), curl uploads it with a chunked POST to /putMedia and reads the JSON
acknowledgements, boto3 (kinesisvideo, kinesis-video-media, kinesis-video-archived-media)
and the AWS CLI v2 drive the APIs, ffprobe/ffmpeg open the HLS and DASH sessions and decode
the clip. Malformed MKV, a cluster without a keyframe and a timecode going back are built
byte by byte (a tiny EBML writer below) and must give their ERROR events.

Every wait polls a condition under a deadline (``wait_until``); GetMedia ends by itself a
few seconds after it has caught up, which the tests await.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from harness import wait_until

AWS = os.environ.get("MILLRACE_AWS_CLI", "/usr/bin/aws")
REGION = "us-east-1"
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
N_FRAGMENTS = 5  # 10 s of video, a keyframe (and a cluster) every 2 s
SERVER_ARGS = ["--enable-clock-advance"]  # retention without waiting hours

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe missing: scripts/test.sh installs them",
)


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )


def error_code(excinfo) -> tuple[str, int]:
    error = excinfo.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


FFMPEG_H264_MKV = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-t", "10",
    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
    "-profile:v", "baseline", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "0",
    "-f", "matroska", "-live", "1", "-cluster_time_limit", "10000",
    "-cluster_size_limit", "50000000", "-",
]


def put_media(endpoint: str, stream: str, stdin, start: float, complete: bool = True) -> list[dict]:
    """Uploads stdin with a chunked POST (curl -T -) and returns the acknowledgements.
    ``complete=False``: the server may end the exchange (an ERROR event) before curl has
    sent everything, so curl's exit status is not checked."""
    headers = [
        "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
        "-H", f"x-amzn-stream-name: {stream}",
        "-H", "x-amzn-fragment-timecode-type: RELATIVE",
        "-H", f"x-amzn-producer-start-timestamp: {start:.3f}",
    ]
    result = subprocess.run(
        ["curl", "-sS", "-N", "-X", "POST", "-T", "-", *headers, "-w", "\nHTTP %{http_code}\n",
         f"{endpoint}/putMedia"],
        stdin=stdin, capture_output=True, timeout=120,
    )
    assert result.returncode == 0 or not complete, result.stderr.decode()
    lines = result.stdout.decode().strip().splitlines()
    assert lines[-1] == "HTTP 200", lines
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def stream_ffmpeg(endpoint: str, stream: str, start: float) -> list[dict]:
    ffmpeg = subprocess.Popen(FFMPEG_H264_MKV, stdout=subprocess.PIPE)
    try:
        acks = put_media(endpoint, stream, ffmpeg.stdout, start)
    finally:
        ffmpeg.stdout.close()
        assert ffmpeg.wait(timeout=60) == 0
    return acks


# A tiny EBML writer for hand-made (and broken) MKV.
def ebml_id(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def element(id_: int, body: bytes) -> bytes:
    return ebml_id(id_) + struct.pack(">Q", len(body) | (1 << 56)) + body


def uint(id_: int, value: int) -> bytes:
    return element(id_, struct.pack(">Q", value))


def session_header() -> bytes:
    entry = uint(0xD7, 1) + uint(0x83, 1) + element(0x86, b"V_MPEG4/ISO/AVC")
    return (
        element(0x1A45DFA3, uint(0x4282, 1) + element(0x4282, b"matroska"))
        + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
        + element(0x1549A966, uint(0x2AD7B1, 1_000_000))
        + element(0x1654AE6B, element(0xAE, entry))
    )


def cluster(timecode: int, keyframe_first: bool) -> bytes:
    body = uint(0xE7, timecode)
    for i in range(3):
        key = keyframe_first and i == 0
        block = b"\x81" + struct.pack(">hB", i * 40, 0x80 if key else 0) + b"\x00\x00\x00\x01\x65"
        body += element(0xA3, block)
    return element(0x1F43B675, body)


@pytest.fixture
def video(endpoint):
    return client("kinesisvideo", endpoint)


@pytest.fixture(scope="module")
def recorded(server):
    """One stream with 10 s of ffmpeg video uploaded through PutMedia (shared by the
    read-only tests of this module: they never reset the server)."""
    server.reset()
    endpoint = server.endpoint
    video = client("kinesisvideo", endpoint)
    arn = video.create_stream(StreamName="camera", DataRetentionInHours=24,
                              MediaType="video/h264")["StreamARN"]
    data = video.get_data_endpoint(StreamName="camera", APIName="PUT_MEDIA")["DataEndpoint"]
    start = float(int(time.time()) - 60)
    acks = stream_ffmpeg(data, "camera", start)
    return {"endpoint": endpoint, "arn": arn, "start": start, "acks": acks}


def archived(recorded):
    return client("kinesis-video-archived-media", recorded["endpoint"])


# ---------------------------------------------------------------------------------------
# Control plane


def test_stream_lifecycle_with_boto3(video):
    arn = video.create_stream(StreamName="cam-1", DeviceName="door", MediaType="video/h264",
                              DataRetentionInHours=2, Tags={"site": "a"})["StreamARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:{REGION}:000000000000:stream/cam-1/")
    info = video.describe_stream(StreamName="cam-1")["StreamInfo"]
    assert info["StreamARN"] == arn
    assert info["Status"] == "ACTIVE"
    assert info["DeviceName"] == "door"
    assert info["DataRetentionInHours"] == 2

    video.create_stream(StreamName="other")
    names = [s["StreamName"] for s in video.list_streams(
        StreamNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "cam"}
    )["StreamInfoList"]]
    assert names == ["cam-1"]
    page = video.list_streams(MaxResults=1)
    assert len(page["StreamInfoList"]) == 1 and "NextToken" in page
    rest = video.list_streams(MaxResults=1, NextToken=page["NextToken"])["StreamInfoList"]
    assert [s["StreamName"] for s in rest] == ["other"]

    version = info["Version"]
    video.update_data_retention(StreamName="cam-1", CurrentVersion=version,
                                Operation="INCREASE_DATA_RETENTION", DataRetentionChangeInHours=10)
    with pytest.raises(ClientError) as excinfo:
        video.update_data_retention(StreamName="cam-1", CurrentVersion=version,
                                    Operation="DECREASE_DATA_RETENTION",
                                    DataRetentionChangeInHours=1)
    assert error_code(excinfo) == ("VersionMismatchException", 400)
    info = video.describe_stream(StreamARN=arn)["StreamInfo"]
    assert info["DataRetentionInHours"] == 12
    video.update_stream(StreamName="cam-1", CurrentVersion=info["Version"], DeviceName="gate")
    assert video.describe_stream(StreamName="cam-1")["StreamInfo"]["DeviceName"] == "gate"

    video.tag_stream(StreamARN=arn, Tags={"floor": "2"})
    assert video.list_tags_for_stream(StreamName="cam-1")["Tags"] == {"site": "a", "floor": "2"}
    video.untag_stream(StreamARN=arn, TagKeyList=["site"])
    assert video.list_tags_for_stream(StreamARN=arn)["Tags"] == {"floor": "2"}
    video.tag_resource(ResourceARN=arn, Tags=[{"Key": "k", "Value": "v"}])
    assert video.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"floor": "2", "k": "v"}

    for api in ("PUT_MEDIA", "GET_MEDIA", "GET_HLS_STREAMING_SESSION_URL", "GET_CLIP"):
        assert video.get_data_endpoint(StreamARN=arn, APIName=api)["DataEndpoint"] == \
            video.meta.endpoint_url

    video.delete_stream(StreamARN=arn)
    with pytest.raises(ClientError) as excinfo:
        video.describe_stream(StreamName="cam-1")
    assert error_code(excinfo) == ("ResourceNotFoundException", 404)


def test_control_plane_errors(video):
    video.create_stream(StreamName="dup")
    with pytest.raises(ClientError) as excinfo:
        video.create_stream(StreamName="dup")
    assert error_code(excinfo) == ("ResourceInUseException", 400)
    with pytest.raises(ClientError) as excinfo:
        video.create_stream(StreamName="bad name!")
    assert error_code(excinfo) == ("InvalidArgumentException", 400)
    with pytest.raises(ClientError) as excinfo:
        video.get_data_endpoint(StreamName="nope", APIName="PUT_MEDIA")
    assert error_code(excinfo) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as excinfo:
        video.delete_stream(StreamARN="arn:aws:kinesisvideo:us-east-1:000000000000:stream/x/1")
    assert error_code(excinfo) == ("ResourceNotFoundException", 404)
    # Not JSON at all (signed, so it passes authentication): an AWS-shaped error, not a 500.
    url = f"{video.meta.endpoint_url}/createStream"
    request = AWSRequest(method="POST", url=url, data=b"{not json",
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "kinesisvideo", REGION).add_auth(request)
    prepared = urllib.request.Request(url, data=b"{not json", method="POST",
                                      headers=dict(request.headers.items()))
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(prepared, timeout=10)
    assert http_error.value.code == 400
    assert http_error.value.headers["x-amzn-ErrorType"] == "InvalidArgumentException"


def test_aws_cli_v2(endpoint):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION=REGION)
    base = [AWS, "--endpoint-url", endpoint, "--output", "json", "kinesisvideo"]
    created = subprocess.run(base + ["create-stream", "--stream-name", "cli-cam",
                                     "--data-retention-in-hours", "1"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["StreamARN"].startswith("arn:aws:kinesisvideo:")
    described = subprocess.run(base + ["describe-stream", "--stream-name", "cli-cam"],
                               capture_output=True, text=True, env=env, timeout=60)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["StreamInfo"]["DataRetentionInHours"] == 1


# ---------------------------------------------------------------------------------------
# PutMedia


def test_put_media_errors(endpoint, video):
    video.create_stream(StreamName="broken", DataRetentionInHours=1)
    start = time.time()

    def upload(body: bytes) -> list[dict]:
        read, write = os.pipe()
        os.write(write, body)
        os.close(write)
        with os.fdopen(read, "rb") as stdin:
            return put_media(endpoint, "broken", stdin, start, complete=False)

    acks = upload(b"this is not a matroska file at all")
    assert acks[-1]["EventType"] == "ERROR"
    assert (acks[-1]["ErrorCode"], acks[-1]["ErrorId"]) == ("INVALID_MKV_DATA", 4006)

    acks = upload(session_header() + cluster(0, keyframe_first=False))
    assert acks[-1]["EventType"] == "ERROR" and acks[-1]["ErrorId"] == 4006, acks
    assert not [a for a in acks if a["EventType"] == "PERSISTED"]

    acks = upload(session_header() + cluster(4000, True) + cluster(2000, True))
    assert [a["EventType"] for a in acks] == ["BUFFERING", "RECEIVED", "PERSISTED",
                                              "ERROR"], acks
    assert (acks[-1]["ErrorCode"], acks[-1]["ErrorId"]) == \
        ("FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", 4004)
    assert acks[-1]["FragmentTimecode"] == 2000

    # An unknown stream is an HTTP error before any acknowledgement.
    result = subprocess.run(
        ["curl", "-sS", "-X", "POST", "--data-binary", "x", "-H", "x-amzn-stream-name: nope",
         "-D", "-", f"{endpoint}/putMedia"], capture_output=True, text=True, timeout=30)
    assert " 404" in result.stdout.splitlines()[0]
    assert "x-amzn-errortype: resourcenotfoundexception" in result.stdout.lower()


def test_put_media_acknowledges_every_fragment(recorded):
    acks = recorded["acks"]
    persisted = [a for a in acks if a["EventType"] == "PERSISTED"]
    assert [a["FragmentTimecode"] for a in persisted] == [0, 2000, 4000, 6000, 8000], acks
    assert not [a for a in acks if a["EventType"] == "ERROR"], acks
    # Per fragment: BUFFERING, RECEIVED, PERSISTED, in that order, with one number.
    for ack in persisted:
        events = [a["EventType"] for a in acks if a.get("FragmentNumber") == ack["FragmentNumber"]]
        assert events == ["BUFFERING", "RECEIVED", "PERSISTED"], acks
    numbers = [a["FragmentNumber"] for a in persisted]
    assert numbers == sorted(numbers) and len(set(numbers)) == N_FRAGMENTS
    assert all(len(n) == 47 and n.isdigit() for n in numbers)


# ---------------------------------------------------------------------------------------
# Reading


def test_list_fragments_with_selector_and_paging(recorded):
    media = archived(recorded)
    start = recorded["start"]
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": start, "EndTimestamp": start + 100}}
    fragments = media.list_fragments(StreamName="camera", FragmentSelector=selector)["Fragments"]
    assert len(fragments) == N_FRAGMENTS
    produced = sorted(f["ProducerTimestamp"].timestamp() for f in fragments)
    assert produced == pytest.approx([start + 2 * i for i in range(N_FRAGMENTS)], abs=0.01)
    assert all(1900 <= f["FragmentLengthInMilliseconds"] <= 2100 for f in fragments), fragments
    assert all(f["FragmentSizeInBytes"] > 1000 for f in fragments)

    narrow = dict(selector, TimestampRange={"StartTimestamp": start + 3,
                                            "EndTimestamp": start + 6.5})
    assert len(media.list_fragments(StreamName="camera",
                                    FragmentSelector=narrow)["Fragments"]) == 2

    seen, token = [], None
    while True:
        kwargs = {"NextToken": token} if token else {"FragmentSelector": selector}
        page = media.list_fragments(StreamARN=recorded["arn"], MaxResults=2, **kwargs)
        assert len(page["Fragments"]) <= 2
        seen += [f["FragmentNumber"] for f in page["Fragments"]]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(f["FragmentNumber"] for f in fragments)


def split_mkv(payload: bytes) -> list[bytes]:
    starts = []
    at = payload.find(EBML_MAGIC)
    while at >= 0:
        starts.append(at)
        at = payload.find(EBML_MAGIC, at + 1)
    return [payload[a:b] for a, b in zip(starts, starts[1:] + [len(payload)])]


def tag_value(chunk: bytes, name: str) -> str:
    at = chunk.find(name.encode())
    assert at >= 0, f"{name} missing"
    value_at = at + len(name) + 2 + 8  # TagString id (2 bytes) and an 8-byte size
    size = struct.unpack(">Q", chunk[value_at - 8:value_at])[0] & ((1 << 56) - 1)
    return chunk[value_at:value_at + size].decode()


def ffprobe_json(path_or_url: str, *extra: str) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", *extra, "-show_entries",
         "stream=codec_name,width,height:format=format_name,duration", "-of", "json",
         path_or_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_get_media_earliest_and_after_a_fragment(recorded, tmp_path):
    data = client("kinesis-video-media", recorded["endpoint"])
    numbers = [a["FragmentNumber"] for a in recorded["acks"] if a["EventType"] == "PERSISTED"]
    answer = data.get_media(StreamName="camera", StartSelector={"StartSelectorType": "EARLIEST"})
    assert answer["ContentType"] == "video/webm"
    chunks = split_mkv(answer["Payload"].read())  # ends once caught up and idle
    assert [tag_value(c, "AWS_KINESISVIDEO_FRAGMENT_NUMBER") for c in chunks] == numbers
    assert tag_value(chunks[-1], "AWS_KINESISVIDEO_CONTINUATION_TOKEN") == numbers[-1]
    produced = float(tag_value(chunks[1], "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"))
    assert produced == pytest.approx(recorded["start"] + 2, abs=0.01)
    first = tmp_path / "first.mkv"
    first.write_bytes(chunks[0])
    probe = ffprobe_json(str(first))
    assert probe["streams"][0]["codec_name"] == "h264"
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (640, 360)

    answer = data.get_media(StreamARN=recorded["arn"], StartSelector={
        "StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": numbers[2]})
    chunks = split_mkv(answer["Payload"].read())
    assert [tag_value(c, "AWS_KINESISVIDEO_FRAGMENT_NUMBER") for c in chunks] == numbers[2:]

    answer = data.get_media(StreamARN=recorded["arn"], StartSelector={
        "StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": numbers[3]})
    chunks = split_mkv(answer["Payload"].read())
    assert [tag_value(c, "AWS_KINESISVIDEO_FRAGMENT_NUMBER") for c in chunks] == numbers[4:]


def test_get_media_for_fragment_list(recorded):
    media = archived(recorded)
    numbers = [a["FragmentNumber"] for a in recorded["acks"] if a["EventType"] == "PERSISTED"]
    answer = media.get_media_for_fragment_list(StreamName="camera",
                                               Fragments=[numbers[3], numbers[1]])
    chunks = split_mkv(answer["Payload"].read())
    assert [tag_value(c, "AWS_KINESISVIDEO_FRAGMENT_NUMBER") for c in chunks] == \
        [numbers[3], numbers[1]]
    with pytest.raises(ClientError) as excinfo:
        media.get_media_for_fragment_list(StreamName="camera", Fragments=["1" * 47])
    assert error_code(excinfo) == ("ResourceNotFoundException", 404)


# ---------------------------------------------------------------------------------------
# Playback


def test_hls_on_demand_plays_in_ffprobe_and_ffmpeg(recorded):
    media = archived(recorded)
    start = recorded["start"]
    url = media.get_hls_streaming_session_url(
        StreamName="camera", PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                             "TimestampRange": {"StartTimestamp": start - 1,
                                                "EndTimestamp": start + 100}},
    )["HLSStreamingSessionURL"]
    assert url.startswith(recorded["endpoint"] + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=")
    with urllib.request.urlopen(url, timeout=10) as response:
        master = response.read().decode()
    assert "#EXT-X-STREAM-INF" in master and 'CODECS="avc1.42' in master
    probe = ffprobe_json(url)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (640, 360)
    assert float(probe["format"]["duration"]) == pytest.approx(10.0, abs=0.2)
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    keyframes = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey",
         "-show_entries", "frame=pts_time", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=60)
    assert len(keyframes.stdout.split()) == N_FRAGMENTS, keyframes.stdout


def test_hls_live_lists_the_newest_fragments(recorded):
    media = archived(recorded)
    url = media.get_hls_streaming_session_url(
        StreamName="camera", MaxMediaPlaylistFragmentResults=3)["HLSStreamingSessionURL"]
    media_url = url.replace("getHLSMasterPlaylist.m3u8", "getHLSMediaPlaylist.m3u8") + \
        "&TrackNumber=1"
    with urllib.request.urlopen(media_url, timeout=10) as response:
        playlist = response.read().decode()
    numbers = [a["FragmentNumber"] for a in recorded["acks"] if a["EventType"] == "PERSISTED"]
    listed = [line.split("FragmentNumber=")[1].split("&")[0]
              for line in playlist.splitlines() if "FragmentNumber=" in line]
    assert listed == numbers[-3:]
    assert "#EXT-X-ENDLIST" not in playlist
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(url.replace("SessionToken=", "SessionToken=x"), timeout=10)
    assert http_error.value.code == 404


def test_dash_on_demand_plays_in_ffprobe(recorded):
    media = archived(recorded)
    start = recorded["start"]
    url = media.get_dash_streaming_session_url(
        StreamName="camera", PlaybackMode="ON_DEMAND",
        DASHFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                              "TimestampRange": {"StartTimestamp": start - 1,
                                                 "EndTimestamp": start + 100}},
    )["DASHStreamingSessionURL"]
    assert "/dash/v1/getDASHManifest.mpd?SessionToken=" in url
    probe = ffprobe_json(url)
    assert probe["streams"][0]["codec_name"] == "h264"
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0, decode.stderr


def test_get_clip_is_a_playable_mp4(recorded, tmp_path):
    media = archived(recorded)
    start = recorded["start"]
    answer = media.get_clip(StreamName="camera", ClipFragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": start + 1, "EndTimestamp": start + 5}})
    assert answer["ContentType"] == "video/mp4"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(answer["Payload"].read())
    probe = ffprobe_json(str(clip))
    assert probe["streams"][0]["codec_name"] == "h264"
    assert "mp4" in probe["format"]["format_name"]
    # Fragments overlapping [start+1, start+5]: those at 0, 2 and 4 s.
    assert float(probe["format"]["duration"]) == pytest.approx(6.0, abs=0.2)
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    # A progressive MP4: ftyp, moov (full sample tables), mdat; no movie fragments.
    assert top_level_boxes(clip.read_bytes()) == ["ftyp", "moov", "mdat"]
    assert count_frames(str(clip)) == 3 * 50


def top_level_boxes(data: bytes) -> list[str]:
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = struct.unpack(">I", data[at:at + 4])[0]
        boxes.append(data[at + 4:at + 8].decode("latin-1"))
        assert size >= 8, boxes
        at += size
    assert at == len(data), boxes
    return boxes


def count_frames(path_or_url: str, stream: str = "v:0") -> int:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", stream,
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path_or_url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[0])  # HLS lists the stream again under its program


def test_hls_mpeg_ts_session_decodes(recorded, tmp_path):
    media = archived(recorded)
    start = recorded["start"]
    url = media.get_hls_streaming_session_url(
        StreamName="camera", PlaybackMode="ON_DEMAND", ContainerFormat="MPEG_TS",
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                             "TimestampRange": {"StartTimestamp": start - 1,
                                                "EndTimestamp": start + 100}},
    )["HLSStreamingSessionURL"]
    media_url = url.replace("getHLSMasterPlaylist.m3u8", "getHLSMediaPlaylist.m3u8") + \
        "&TrackNumber=1"
    with urllib.request.urlopen(media_url, timeout=10) as response:
        playlist = response.read().decode()
    assert "#EXT-X-MAP" not in playlist, playlist
    segments = [line for line in playlist.splitlines() if line.startswith("getTSFragment.ts?")]
    assert len(segments) == N_FRAGMENTS, playlist
    with urllib.request.urlopen(url.split("getHLSMasterPlaylist")[0] + segments[0],
                                timeout=10) as response:
        assert response.headers["Content-Type"] == "video/MP2T"
        segment = response.read()
    assert len(segment) % 188 == 0 and segment[::188] == b"\x47" * (len(segment) // 188)
    one = tmp_path / "one.ts"
    one.write_bytes(segment)
    probe = ffprobe_json(str(one))
    assert probe["format"]["format_name"] == "mpegts"
    assert probe["streams"][0]["codec_name"] == "h264"

    probe = ffprobe_json(url)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (640, 360)
    assert float(probe["format"]["duration"]) == pytest.approx(10.0, abs=0.2)
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    assert count_frames(url) == N_FRAGMENTS * 50  # 25 fps for 10 s, as uploaded
    # A fragmented-MP4 resource is not part of a TS session.
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(url.replace("getHLSMasterPlaylist.m3u8",
                                           "getMP4InitFragment.mp4"), timeout=10)
    assert http_error.value.code in (400, 404)


FFMPEG_H264_AAC_MKV = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10",
    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
    "-profile:v", "baseline", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "0",
    "-c:a", "aac", "-b:a", "64k",
    "-f", "matroska", "-live", "1", "-cluster_time_limit", "10000",
    "-cluster_size_limit", "50000000", "-",
]


def stream_codecs(path_or_url: str) -> list[str]:
    probe = ffprobe_json(path_or_url)
    return sorted(s["codec_name"] for s in probe["streams"])


def test_audio_track_plays_in_every_format(recorded, tmp_path):
    """H.264 + AAC through PutMedia: HLS (fMP4 and TS), DASH and GetClip carry both."""
    endpoint = recorded["endpoint"]
    video = client("kinesisvideo", endpoint)
    media = archived(recorded)
    video.create_stream(StreamName="with-audio", DataRetentionInHours=1,
                        MediaType="video/h264,audio/aac")
    start = float(int(time.time()) - 60)
    encoder = subprocess.Popen(FFMPEG_H264_AAC_MKV, stdout=subprocess.PIPE)
    try:
        acks = put_media(endpoint, "with-audio", encoder.stdout, start)
    finally:
        encoder.stdout.close()
        assert encoder.wait(timeout=60) == 0
    assert not [a for a in acks if a["EventType"] == "ERROR"], acks
    assert [a["EventType"] for a in acks].count("PERSISTED") == N_FRAGMENTS, acks
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": start - 1, "EndTimestamp": start + 100}}

    for container in ("FRAGMENTED_MP4", "MPEG_TS"):
        url = media.get_hls_streaming_session_url(
            StreamName="with-audio", PlaybackMode="ON_DEMAND", ContainerFormat=container,
            HLSFragmentSelector=selector)["HLSStreamingSessionURL"]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert "mp4a.40.2" in response.read().decode()
        assert stream_codecs(url) == ["aac", "h264"], container
        decode = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-"],
                                capture_output=True, text=True, timeout=120)
        assert decode.returncode == 0 and decode.stderr == "", (container, decode.stderr)
        assert count_frames(url) == N_FRAGMENTS * 50, container
        assert count_frames(url, "a:0") > 400, container  # 10 s of 1024-sample frames

    url = media.get_dash_streaming_session_url(
        StreamName="with-audio", PlaybackMode="ON_DEMAND",
        DASHFragmentSelector=selector)["DASHStreamingSessionURL"]
    assert stream_codecs(url) == ["aac", "h264"]

    answer = media.get_clip(StreamName="with-audio", ClipFragmentSelector=selector)
    clip = tmp_path / "av.mp4"
    clip.write_bytes(answer["Payload"].read())
    assert top_level_boxes(clip.read_bytes()) == ["ftyp", "moov", "mdat"]
    assert stream_codecs(str(clip)) == ["aac", "h264"]
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    assert count_frames(str(clip)) == N_FRAGMENTS * 50


FFMPEG_H265_MKV = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-t", "10",
    "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
    "-x265-params", "keyint=50:min-keyint=50:scenecut=0:bframes=0:open-gop=0:log-level=error",
    "-f", "matroska", "-live", "1", "-cluster_time_limit", "10000",
    "-cluster_size_limit", "50000000", "-",
]


@pytest.mark.skipif(
    "libx265" not in subprocess.run(["ffmpeg", "-hide_banner", "-encoders"],
                                    capture_output=True, text=True).stdout,
    reason="this ffmpeg has no libx265")
def test_h265_plays_as_fragmented_mp4_and_clip(recorded, tmp_path):
    endpoint = recorded["endpoint"]
    video = client("kinesisvideo", endpoint)
    media = archived(recorded)
    video.create_stream(StreamName="hevc", DataRetentionInHours=1, MediaType="video/h265")
    start = float(int(time.time()) - 60)
    encoder = subprocess.Popen(FFMPEG_H265_MKV, stdout=subprocess.PIPE)
    try:
        acks = put_media(endpoint, "hevc", encoder.stdout, start)
    finally:
        encoder.stdout.close()
        assert encoder.wait(timeout=60) == 0
    assert [a["EventType"] for a in acks].count("PERSISTED") == N_FRAGMENTS, acks
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": start - 1, "EndTimestamp": start + 100}}

    url = media.get_hls_streaming_session_url(
        StreamName="hevc", PlaybackMode="ON_DEMAND", HLSFragmentSelector=selector,
    )["HLSStreamingSessionURL"]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert 'CODECS="hvc1.1.6.L' in response.read().decode()
    assert stream_codecs(url) == ["hevc"]
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    assert count_frames(url) == N_FRAGMENTS * 50

    url = media.get_dash_streaming_session_url(
        StreamName="hevc", PlaybackMode="ON_DEMAND", DASHFragmentSelector=selector,
    )["DASHStreamingSessionURL"]
    assert stream_codecs(url) == ["hevc"]

    answer = media.get_clip(StreamName="hevc", ClipFragmentSelector=selector)
    clip = tmp_path / "hevc.mp4"
    clip.write_bytes(answer["Payload"].read())
    assert top_level_boxes(clip.read_bytes()) == ["ftyp", "moov", "mdat"]
    assert stream_codecs(str(clip)) == ["hevc"]
    assert count_frames(str(clip)) == N_FRAGMENTS * 50

    # As on AWS, H.265 is not served in MPEG-TS.
    with pytest.raises(ClientError) as excinfo:
        media.get_hls_streaming_session_url(
            StreamName="hevc", PlaybackMode="ON_DEMAND", ContainerFormat="MPEG_TS",
            HLSFragmentSelector=selector)
    assert error_code(excinfo) == ("InvalidArgumentException", 400)


def test_get_images_decodes_jpeg_frames(recorded):
    media = archived(recorded)
    start = recorded["start"]
    answer = media.get_images(StreamName="camera", ImageSelectorType="PRODUCER_TIMESTAMP",
                              StartTimestamp=start + 1, EndTimestamp=start + 20,
                              SamplingInterval=3000, Format="JPEG", MaxResults=10)
    images = answer["Images"]
    assert len(images) == 7  # 1, 4, 7 s ... 19 s
    with_content = [i for i in images if "ImageContent" in i]
    assert len(with_content) == 3  # the video covers 0-10 s
    assert all(base64.b64decode(i["ImageContent"])[:2] == b"\xff\xd8" for i in with_content)
    assert [i.get("Error") for i in images[3:]] == ["NO_MEDIA"] * 4


def test_playback_errors(recorded):
    media = archived(recorded)
    video = client("kinesisvideo", recorded["endpoint"])
    video.create_stream(StreamName="no-retention")
    with pytest.raises(ClientError) as excinfo:
        media.get_hls_streaming_session_url(StreamName="no-retention")
    assert error_code(excinfo) == ("NoDataRetentionException", 400)
    with pytest.raises(ClientError) as excinfo:
        media.get_hls_streaming_session_url(StreamName="camera", PlaybackMode="ON_DEMAND")
    assert error_code(excinfo) == ("InvalidArgumentException", 400)
    with pytest.raises(ClientError) as excinfo:
        media.get_clip(StreamName="missing", ClipFragmentSelector={
            "FragmentSelectorType": "SERVER_TIMESTAMP",
            "TimestampRange": {"StartTimestamp": 1, "EndTimestamp": 2}})
    assert error_code(excinfo) == ("ResourceNotFoundException", 404)


def upload_bytes(endpoint: str, stream: str, body: bytes) -> list[dict]:
    read, write = os.pipe()
    os.write(write, body)
    os.close(write)
    with os.fdopen(read, "rb") as stdin:
        return put_media(endpoint, stream, stdin, time.time(), complete=False)


def test_retention_deletes_expired_fragments(recorded):
    endpoint = recorded["endpoint"]
    video = client("kinesisvideo", endpoint)
    media = archived(recorded)
    video.create_stream(StreamName="short-lived", DataRetentionInHours=1)
    acks = upload_bytes(endpoint, "short-lived",
                        session_header() + cluster(0, True) + cluster(2000, True))
    assert [a["EventType"] for a in acks].count("PERSISTED") == 2, acks
    assert len(media.list_fragments(StreamName="short-lived")["Fragments"]) == 2
    request = urllib.request.Request(f"{endpoint}/millrace-api/advance-clock?ms=7200000",
                                     method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    acks = upload_bytes(endpoint, "short-lived", session_header() + cluster(0, True))
    assert [a["EventType"] for a in acks].count("PERSISTED") == 1, acks
    fragments = media.list_fragments(StreamName="short-lived")["Fragments"]
    assert [f["FragmentNumber"] for f in fragments] == [acks[-1]["FragmentNumber"]]


def test_fragments_survive_a_kill(recorded, server):
    server.kill()  # SIGKILL: PERSISTED fragments must be on disk
    server.start()
    media = client("kinesis-video-archived-media", server.endpoint)
    fragments = media.list_fragments(StreamName="camera")["Fragments"]
    assert len(fragments) == N_FRAGMENTS
    numbers = [a["FragmentNumber"] for a in recorded["acks"] if a["EventType"] == "PERSISTED"]
    answer = media.get_media_for_fragment_list(StreamName="camera", Fragments=numbers[:1])
    assert tag_value(answer["Payload"].read(), "AWS_KINESISVIDEO_FRAGMENT_NUMBER") == numbers[0]


# ---------------------------------------------------------------------------------------
# Authorization


VIDEO_ADMIN = ("AKIAVIDEOADMIN000001", "video-admin-secret")
CAMERA = ("AKIAVIDEOCAMERA00001", "camera-secret")
AUTHZ_CONFIG = f"""
[[credential]]
access_key_id = "{VIDEO_ADMIN[0]}"
secret_access_key = "{VIDEO_ADMIN[1]}"
principal = "arn:aws:iam::000000000000:user/video-admin"

[[credential]]
access_key_id = "{CAMERA[0]}"
secret_access_key = "{CAMERA[1]}"
principal = "arn:aws:iam::000000000000:user/camera"

[[policy]]
name = "video-admin"
principals = ["arn:aws:iam::000000000000:user/video-admin"]
document = '{{"Statement": [{{"Effect": "Allow", "Action": "kinesisvideo:*", "Resource": "*"}}]}}'

[[policy]]
name = "camera"
principals = ["arn:aws:iam::000000000000:user/camera"]
document = '{{"Statement": [{{"Effect": "Allow", "Action": ["kinesisvideo:PutMedia", "kinesisvideo:DescribeStream"], "Resource": "arn:aws:kinesisvideo:*:000000000000:stream/front-door/*"}}]}}'
"""


def signed_put_media(endpoint: str, keys: tuple[str, str], stream: str, body: bytes):
    """PutMedia signed as the producer SDKs sign it (the payload hash of an empty body),
    then sent with the MKV body."""
    url = f"{endpoint}/putMedia"
    headers = {"x-amzn-stream-name": stream, "x-amzn-fragment-timecode-type": "RELATIVE",
               "x-amzn-producer-start-timestamp": f"{time.time():.3f}"}
    request = AWSRequest(method="POST", url=url, data=b"", headers=headers)
    SigV4Auth(Credentials(*keys), "kinesisvideo", REGION).add_auth(request)
    prepared = urllib.request.Request(url, data=body, method="POST",
                                      headers=dict(request.headers.items()))
    return urllib.request.urlopen(prepared, timeout=30)


def test_put_media_is_authorized_per_stream(make_server):
    server = make_server(config_text=AUTHZ_CONFIG)
    admin = boto3.client("kinesisvideo", endpoint_url=server.endpoint, region_name=REGION,
                         aws_access_key_id=VIDEO_ADMIN[0],
                         aws_secret_access_key=VIDEO_ADMIN[1],
                         config=Config(retries={"max_attempts": 1}))
    camera = boto3.client("kinesisvideo", endpoint_url=server.endpoint, region_name=REGION,
                          aws_access_key_id=CAMERA[0], aws_secret_access_key=CAMERA[1],
                          config=Config(retries={"max_attempts": 1}))
    front = admin.create_stream(StreamName="front-door", DataRetentionInHours=1)["StreamARN"]
    back = admin.create_stream(StreamName="back-door", DataRetentionInHours=1)["StreamARN"]

    assert camera.describe_stream(StreamARN=front)["StreamInfo"]["StreamName"] == "front-door"
    with pytest.raises(ClientError) as excinfo:
        camera.describe_stream(StreamName="back-door")
    assert error_code(excinfo) == ("AccessDeniedException", 403)
    assert back in excinfo.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as excinfo:
        camera.create_stream(StreamName="front-door-2")
    assert error_code(excinfo) == ("AccessDeniedException", 403)

    mkv = session_header() + cluster(0, True) + cluster(2000, True)
    with signed_put_media(server.endpoint, CAMERA, "front-door", mkv) as response:
        acks = [json.loads(line) for line in response.read().decode().splitlines() if line]
    assert [a["EventType"] for a in acks].count("PERSISTED") == 2, acks

    with pytest.raises(urllib.error.HTTPError) as http_error:
        signed_put_media(server.endpoint, CAMERA, "back-door", mkv)
    assert http_error.value.code == 403
    assert http_error.value.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    message = json.loads(http_error.value.read())["Message"]
    assert "kinesisvideo:PutMedia" in message and back in message
    fragments = boto3.client("kinesis-video-archived-media", endpoint_url=server.endpoint,
                             region_name=REGION, aws_access_key_id=VIDEO_ADMIN[0],
                             aws_secret_access_key=VIDEO_ADMIN[1])
    assert fragments.list_fragments(StreamName="back-door")["Fragments"] == []
    assert len(fragments.list_fragments(StreamName="front-door")["Fragments"]) == 2
