"""The broker connection: TLS and a password work, plain text off loopback is refused.

A real ``redis-server`` serves TLS only (certificates from ``trustme``) and
requires a password. The publisher signs whatever results reach the broker,
so who may talk to it is the fleet's trust boundary (docs/fleet.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.fleet.fleetutil import RedisServer, run_fleet
from tests.logutil import PYTHON, cli_env, free_port


def _status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "rebuild", "fleet", "status", "--json", *args],
        env={**cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tls_broker_with_password_works_and_wrong_credentials_are_refused(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file),
        "--tls-auth-clients", "no",
        password="s3cret-broker",
    )  # fmt: skip
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        env = {"FLEET_PW": "s3cret-broker", "WRONG_PW": "guess"}
        ok = _status(
            "--broker", url, "--broker-ca-bundle", str(ca_file),
            "--broker-password-env", "FLEET_PW", env=env,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["broker"] == url  # no password in what is shown

        wrong = _status(
            "--broker", url, "--broker-ca-bundle", str(ca_file),
            "--broker-password-env", "WRONG_PW", env=env,
        )  # fmt: skip
        assert wrong.returncode == 2
        assert "guess" not in wrong.stdout + wrong.stderr

        # Without the CA that issued the server's certificate: not trusted.
        untrusted = _status("--broker", url, "--broker-password-env", "FLEET_PW", env=env)
        assert untrusted.returncode == 2
        assert "certificate" in (untrusted.stdout + untrusted.stderr).lower()
    finally:
        server.stop()


def test_plain_redis_off_loopback_is_refused_before_connecting() -> None:
    # The address is never contacted: the URL is refused first.
    r = run_fleet("status", "--broker", "redis://:pw@192.0.2.10:6379/0", "--json")
    assert r.returncode == 2
    err = json.loads(r.stdout)["error"]["message"]
    assert "rediss://" in err and "pw" not in err
    bad = run_fleet("status", "--broker", "http://127.0.0.1:6379/0", "--json")
    assert bad.returncode == 2


def test_unreachable_broker_is_a_clean_operational_error() -> None:
    port = free_port()  # nothing listens here
    r = run_fleet("status", "--broker", f"redis://127.0.0.1:{port}/0")
    assert r.returncode == 2
    assert f"127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("db", ["\u00b2", "\u0663", "01", "-1", "2147483648"])
def test_broker_database_that_is_not_an_ascii_number_is_a_usage_error(db: str) -> None:
    """'²' passed str.isdigit() and reached the Redis client's int(): a traceback."""
    r = run_fleet("status", "--broker", f"redis://127.0.0.1:6379/{db}", "--json")
    assert r.returncode == 2
    assert "database number" in json.loads(r.stdout)["error"]["message"]
    assert "Traceback" not in r.stderr
