"""A junk flood naming an artifact's digest cannot hide its genuine release from lookups.

The attack is real: 1,024 unsigned in-toto statements naming the digest of
an artifact are posted through ``/add-bundle`` (anyone can add entries: the
log is a neutral record), then the maintainer's genuine, signed release is
added. Updaters look the digest up to find the release; a lookup that stops
at the first 1,000 without saying so hid it. Now every page says where the
next one starts (``next_cursor``), and ``keyid=`` narrows the lookup to
entries whose signatures name that key ID, so junk without it cannot crowd
a trusted signer out. Hints are unauthenticated: junk may carry the trusted
key ID too, and then paging still reaches the genuine entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebuild.log.client import LogClient
from tests import clijson
from tests.logutil import Server, http_request, make_key, run_cli, start_log
from verify.dsse import sign_envelope
from verify.keys import SigningKey

ARTIFACT = hashlib.sha256(b"hello-1.0.0.phar").hexdigest()


def _statement(tag: str) -> bytes:
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "hello-1.0.0.phar", "digest": {"sha256": ARTIFACT}}],
            "predicateType": "https://example.org/test/v1",
            "predicate": {"tag": tag, "package": "hello-phar"},
        },
        sort_keys=True,
    ).encode()


def _junk(i: int, keyid: str) -> bytes:
    sig = base64.b64encode(hashlib.sha512(b"%d" % i).digest()).decode()
    return json.dumps(
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(_statement(f"junk-{i}")).decode(),
            "signatures": [{"keyid": keyid, "sig": sig}],
        }
    ).encode()


def _add_bundle(url: str, entries: list[bytes]) -> list[int]:
    body = b"".join(len(e).to_bytes(2, "big") + e for e in entries)
    status, data = http_request(url, "POST", "/add-bundle", body)
    assert status == 200, data
    return [e["index"] for e in json.loads(data)["entries"]]


@pytest.fixture(scope="module", params=["0", "2"], ids=["one-process", "two-front-ends"])
def flooded(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, int, SigningKey, list[int]]]:
    """A log holding 1,024 junk statements for ARTIFACT, then its genuine release."""
    tmp = tmp_path_factory.mktemp("flood")
    server = start_log(
        tmp / "log", make_key(tmp, "flood.log.test"), tmp / "s.log", "--workers", request.param
    )
    try:
        junk: list[int] = []
        for b in range(4):
            junk += _add_bundle(server.url, [_junk(b * 256 + i, "") for i in range(256)])
        maintainer = SigningKey.generate("maintainer.example")
        genuine = sign_envelope(_statement("the release"), [maintainer])
        (index,) = _add_bundle(server.url, [genuine])
        # junk that names the maintainer's key ID in its (unauthenticated) hint
        hint = f"maintainer.example+{maintainer.verifier_key().key_id}"
        spoofed = _add_bundle(server.url, [_junk(10_000 + i, hint) for i in range(5)])
        yield server, index, maintainer, spoofed
    finally:
        server.stop()


def _lookup(url: str, query: str = "") -> dict[str, object]:
    status, data = http_request(url, "GET", f"/lookup/sha256/{ARTIFACT}{query}")
    assert status == 200, data
    doc = json.loads(data)
    assert isinstance(doc, dict) and set(doc) == {"sha256", "indexes", "next_cursor"}
    return doc


def test_genuine_release_is_reachable_behind_a_junk_flood_by_paging(
    flooded: tuple[Server, int, SigningKey, list[int]],
) -> None:
    server, genuine, _, spoofed = flooded
    first = _lookup(server.url)
    indexes = first["indexes"]
    assert isinstance(indexes, list) and len(indexes) == 1000
    assert genuine not in indexes
    assert first["next_cursor"] == indexes[-1] + 1  # the page says it is not the end
    seen = list(indexes)
    cursor = first["next_cursor"]
    while cursor is not None:
        page = _lookup(server.url, f"?cursor={cursor}")
        assert isinstance(page["indexes"], list)
        seen += page["indexes"]
        cursor = page["next_cursor"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 1024 + 1 + 5
    assert genuine in seen
    # the client follows the pages too
    with LogClient(server.url) as client:
        assert client.lookup_subject(bytes.fromhex(ARTIFACT)) == seen
        assert genuine in seen and spoofed[0] in seen


def test_genuine_release_is_found_by_package_behind_a_junk_flood(
    flooded: tuple[Server, int, SigningKey, list[int]], tmp_path: Path
) -> None:
    """The same flood names the package: ``/lookup/package`` pages too, and ``rebuild log
    find --package`` (which follows the pages) shows the genuine release, verified."""
    server, genuine, maintainer, spoofed = flooded
    status, data = http_request(server.url, "GET", "/lookup/package/hello-phar")
    assert status == 200, data
    first = json.loads(data)
    assert len(first["indexes"]) == 1000 and genuine not in first["indexes"]
    assert first["next_cursor"] == first["indexes"][-1] + 1
    with LogClient(server.url) as client:
        assert genuine in client.lookup_package("Hello_Phar")  # normalized like the index
    pub = tmp_path / "maintainer.pub"
    pub.write_text(maintainer.verifier_key().encode() + "\n")
    r = run_cli(
        "log", "find", "--log", server.url, "--package", "hello-phar",
        "--trusted-key", str(pub), "--json",
    )  # fmt: skip
    doc = clijson.envelope(r.stdout, 0, "log find")
    assert doc["found"] == 1024 + 1 + 5
    [found] = [e for e in doc["entries"] if e["index"] == genuine]
    assert found["verified_signers"] == [f"maintainer.example+{maintainer.verifier_key().key_id}"]
    assert all(e["verified_signers"] == [] for e in doc["entries"] if e["index"] in spoofed)


def test_keyid_filter_finds_the_trusted_signer_at_once(
    flooded: tuple[Server, int, SigningKey, list[int]],
) -> None:
    server, genuine, maintainer, spoofed = flooded
    key_id = maintainer.verifier_key().key_id
    doc = _lookup(server.url, f"?keyid={key_id}")
    # junk claiming the same hint is found too: the client still verifies signatures
    assert doc == {"sha256": ARTIFACT, "indexes": [genuine, *spoofed], "next_cursor": None}
    assert _lookup(server.url, "?keyid=00000000")["indexes"] == []
    both = _lookup(server.url, f"?keyid=00000000&keyid={key_id}&cursor={genuine}")
    assert both["indexes"] == [genuine, *spoofed]
    assert _lookup(server.url, f"?keyid={key_id}&cursor={genuine + 1}")["indexes"] == spoofed
    with LogClient(server.url) as client:
        page = client.lookup_subject_page(bytes.fromhex(ARTIFACT), 0, [bytes.fromhex(key_id)])
        assert page == ([genuine, *spoofed], None)


@pytest.mark.parametrize(
    "query",
    [
        "?cursor=01",
        "?cursor=-1",
        "?cursor=x",
        "?cursor=1&cursor=2",
        "?cursor=99999999999999999999",
        "?keyid=ABCDEF12",
        "?keyid=abcdef1",
        "?keyid=abcdef123",
        "?keyid",
        "?keyid=%61bcdef12",
        "?limit=5",
        "?" + "&".join(f"keyid={i:08x}" for i in range(17)),
    ],
)
def test_bad_lookup_parameters_are_400(
    flooded: tuple[Server, int, SigningKey, list[int]], query: str
) -> None:
    server = flooded[0]
    status, data = http_request(server.url, "GET", f"/lookup/sha256/{ARTIFACT}{query}")
    assert status == 400, data


def test_lookup_pages_reach_an_entry_added_after_a_full_page(tmp_path: Path) -> None:
    """Exactly 1,000 matches: the page is full and then complete; one more adds a page."""
    server = start_log(tmp_path / "log", make_key(tmp_path, "page.log.test"), tmp_path / "s.log")
    try:
        for b in range(4):
            _add_bundle(server.url, [_junk(b * 250 + i, "") for i in range(250)])
        doc = _lookup(server.url)
        assert len(doc["indexes"]) == 1000 and doc["next_cursor"] is None  # type: ignore[arg-type]
        (last,) = _add_bundle(server.url, [_junk(5000, "")])
        doc = _lookup(server.url)
        assert doc["next_cursor"] == 1000
        assert _lookup(server.url, "?cursor=1000") == {
            "sha256": ARTIFACT,
            "indexes": [last],
            "next_cursor": None,
        }
    finally:
        server.stop()
