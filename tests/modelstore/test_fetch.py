"""The pod's fetcher over plain HTTP (the Hub's path): parallel ranges, servers without ranges,
redirects, a wrong digest, a missing object; and the stage lines and store URIs it relies on."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llmctl.modelstore import access, fetch, locations, stages
from tests.support.range_server import range_server

SIZE = 5 * 1024 * 1024 + 321
CHUNK = 1024 * 1024
SETTINGS = fetch.FetchSettings(connections=4, chunk_bytes=CHUNK, stall_timeout=10)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "served" / "m.gguf"
    path.parent.mkdir()
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _source(url: str) -> access.ObjectSource:
    return access.object_source(url, {})


def test_ranges_in_parallel_give_the_same_bytes(model: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = model
    dest = tmp_path / "out.gguf"
    with range_server({"m.gguf": path}) as served:
        result = fetch.fetch_to_file(_source(f"{served.base_url}/m.gguf"), dest, digest, SETTINGS)
    assert dest.read_bytes() == path.read_bytes()
    assert result.sha256 == digest and result.bytes == SIZE and result.connections == 4
    ranges = sorted(r for _, r in served.requests if r)
    # The one-byte probe, then one GET per 1 MiB range (the last one short).
    assert ranges[0] == "bytes=0-0" or "bytes=0-0" in ranges
    expected = {f"bytes={i * CHUNK}-{min(SIZE, (i + 1) * CHUNK) - 1}" for i in range(6)}
    assert expected <= set(ranges)
    assert len(served.requests) == 1 + 6


def test_a_server_without_ranges_is_read_in_one_stream(
    model: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = model
    dest = tmp_path / "out.gguf"
    with range_server({"m.gguf": path}, honour_range=False) as served:
        result = fetch.fetch_to_file(_source(f"{served.base_url}/m.gguf"), dest, digest, SETTINGS)
    assert result.connections == 1 and dest.read_bytes() == path.read_bytes()


def test_a_redirect_is_followed_once_then_ranges_go_to_its_target(
    model: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = model
    dest = tmp_path / "out.gguf"
    with range_server({"m.gguf": path}) as served:
        fetch.fetch_to_file(_source(f"{served.base_url}/redirect/m.gguf"), dest, digest, SETTINGS)
    redirected = [p for p, _ in served.requests if p.startswith("/redirect/")]
    assert len(redirected) == 1 and dest.read_bytes() == path.read_bytes()


def test_a_wrong_digest_leaves_nothing_behind(model: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = model
    dest = tmp_path / "out.gguf"
    wrong = "0" * 64
    with range_server({"m.gguf": path}) as served:
        with pytest.raises(fetch.IntegrityError) as caught:
            fetch.fetch_to_file(_source(f"{served.base_url}/m.gguf"), dest, wrong, SETTINGS)
    assert f"expected {wrong}, got {digest}" in str(caught.value)
    assert "llama-server will not start" in str(caught.value)
    assert list(tmp_path.iterdir()) == [path.parent]


def test_a_missing_object_says_push_it(model: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = model
    with range_server({"m.gguf": path}) as served:
        with pytest.raises(fetch.FetchError, match="HTTP 404.*llmctl model push"):
            fetch.fetch_to_file(_source(f"{served.base_url}/nope.gguf"), tmp_path / "o", None)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.part").exists()


def test_the_hub_token_goes_to_the_hub_only() -> None:
    source = access.object_source(
        "https://huggingface.co/org/repo/resolve/abc/m.gguf", {"HF_TOKEN": "hf_secret"}
    )
    hub = source.headers("GET", source.url, (0, 9))
    cdn = source.headers("GET", "https://cas-bridge.xethub.hf.co/x?sig=1", (0, 9))
    assert hub == {"Range": "bytes=0-9", "Authorization": "Bearer hf_secret"}
    assert cdn == {"Range": "bytes=0-9"}


def test_stage_lines_read_back_and_become_metrics(tmp_path: Path) -> None:
    stage = stages.Stage(
        "fetch", 6.1234, {"bytes": 4081004224, "mb_per_s": 666.4, "source": "s3://b/k k"}
    )
    line = stages.stage_line(stage)
    assert line.startswith("llmctl-stage stage=fetch seconds=6.123 bytes=4081004224")
    assert stages.parse_stage_line(line)["source"] == "s3://b/k k"
    target = tmp_path / "m" / "fetch.prom"
    stages.write_metrics(target, [stage], {"model": "m.gguf"})
    text = target.read_text()
    assert 'llmctl_pod_stage_seconds{model="m.gguf",stage="fetch"} 6.123' in text
    assert 'llmctl_model_fetch_bytes{model="m.gguf"} 4081004224' in text
    assert stages.read_metrics_stages(target) == [stages.Stage("fetch", 6.123)]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://b/k", "must start with s3://, gs:// or azure://"),
        ("s3://Bad_Bucket/k", "bucket name 'Bad_Bucket' is not valid"),
        ("gs://bucket/", "names no object"),
        ("azure://UPPER/c/k", "storage account name 'UPPER'"),
        ("azure://acct/c--x/k", "container name 'c--x'"),
    ],
)
def test_bad_store_uris_say_which_rule(uri: str, message: str) -> None:
    with pytest.raises(locations.LocationError, match=message):
        locations.parse_store_uri(uri)


def test_store_uris_round_trip_and_name_their_sha256() -> None:
    location = locations.parse_store_uri("azure://acct/models/llmctl/models/x/x.gguf")
    assert location.uri == "azure://acct/models/llmctl/models/x/x.gguf"
    assert location.sha256_location().key == "llmctl/models/x/x.gguf.sha256"
    line = locations.sha256_line("a" * 64, "x.gguf")
    assert line == "a" * 64 + "  x.gguf\n"
    assert locations.parse_sha256_line(line) == "a" * 64
