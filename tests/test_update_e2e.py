"""From the maintainer's signature to the installed file, through a real witnessed log.

Everything is a real process except the rebuilds: ``key generate``, two
``witness serve``, a ``log serve`` that publishes only cosigned checkpoints,
``release sign``, ``log add``, ``rebuild bundle`` (lookup, tiles, proofs,
and the consistency proof for the next release), ``mirror publish``, two
``mirror serve`` over HTTPS (one of them tampered with) and ``rebuild
update``. The rebuild attestations are signed here with the rebuilders' real
keys for the bytes the maintainer signed; a real rebuild in the pinned
environment needs the Docker engine and is proven by the gate's attack
suite (tests/test_gate_attacks.py) and tests/engine/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rebuild.keystore import load_signing_key
from tests.logutil import Server, free_port, make_key, start_log
from tests.updaterutil import TLS, installed, report, update_cli
from tests.updaterutil import cli_json as _json
from tests.updaterutil import logged_release as _release
from verify.bundle import parse_bundle
from verify.cosignature import witness_key


def test_a_release_signed_logged_and_witnessed_is_installed_from_https_mirrors(
    tmp_path: Path,
) -> None:
    keys = {
        n: make_key(tmp_path, f"{n}.e2e.test")
        for n in ("log", "w1", "w2", "maintainer", "r1", "r2")
    }
    servers: list[Server] = []
    try:
        wurls = []
        for w in ("w1", "w2"):
            s = Server(
                [
                    *("witness", "serve", "--key", str(keys[w])),
                    *("--state", str(tmp_path / f"{w}-state"), "--listen", "127.0.0.1:0"),
                    *("--log-key", f"{keys['log']}.pub"),
                ],
                tmp_path / f"{w}.out",
            )
            servers.append(s)
            wurls.append(s.url)
        log_vkey = Path(f"{keys['log']}.pub").read_text().strip()
        wvk = [witness_key(load_signing_key(keys[w])).encode() for w in ("w1", "w2")]
        tlog = tmp_path / "tlog.policy"
        tlog.write_text(
            f"log {log_vkey}\nwitness W1 {wvk[0]} {wurls[0]}\nwitness W2 {wvk[1]} {wurls[1]}\n"
            "group both 2 W1 W2\nquorum both\n"
        )
        log = start_log(
            tmp_path / "log", keys["log"], tmp_path / "log.out", "--witnesses", str(tlog)
        )
        servers.append(log)

        def vkeys(*names: str) -> str:
            return ", ".join(f'"{Path(f"{keys[n]}.pub").read_text().strip()}"' for n in names)

        policy = tmp_path / "policy.toml"
        policy.write_text(
            'format = "rebuild-policy/v1"\ntlog_policy = "tlog.policy"\nmax_checkpoint_age = 3600\n'
            "[[package]]\n"
            'name = "hello-phar"\n'
            f"maintainers = [{vkeys('maintainer')}]\n"
            f"rebuilders = [{vkeys('r1', 'r2')}]\n"
            "threshold = 2\n"
        )

        art1, bundle1 = _release(tmp_path, "1.0.0", keys, log.url, None)
        honest, tampered = tmp_path / "honest", tmp_path / "tampered"
        for m in (honest, tampered):
            m.mkdir()
            _json(
                "mirror",
                "publish",
                "--dir",
                str(m),
                "--artifact",
                str(art1),
                "--bundle",
                str(bundle1),
            )
        # the tampered mirror serves a backdoored artifact and a version list to match it
        bad = tampered / "hello-phar" / "1.0.0" / art1.name
        bad.write_bytes(art1.read_bytes() + b"system($_GET['c']);\n")
        index = json.loads((tampered / "hello-phar" / "index.json").read_text())
        index["releases"][0]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
        index["releases"][0]["size"] = bad.stat().st_size
        (tampered / "hello-phar" / "index.json").write_text(json.dumps(index))

        tls = TLS(tmp_path / "tls")
        cert, key = tls.cert_files()
        urls = {}
        for name, m in (("tampered", tampered), ("honest", honest)):
            s = Server(
                [
                    *("mirror", "serve", "--dir", str(m), "--listen", "127.0.0.1:0"),
                    *("--tls-cert", str(cert), "--tls-key", str(key)),
                ],
                tmp_path / f"mirror-{name}.out",
            )
            servers.append(s)
            urls[name] = s.url

        install = tmp_path / "install"
        ca = ["--mirror-ca-bundle", str(tls.ca_bundle)]
        r = update_cli(policy, install, [urls["tampered"], urls["honest"]], *ca)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = report(r)
        first, second = doc["attempts"]
        assert (first["mirror"], first["outcome"]) == (urls["tampered"], "rejected")
        assert "subject-mismatch" in {f["code"] for f in first["gate"]["failures"]}
        assert (second["mirror"], second["outcome"]) == (urls["honest"], "installed")
        assert second["gate"]["rebuilders"]["distinct"] == 2
        assert installed(install) == ("1.0.0", art1.read_bytes())
        assert (install / "current" / art1.name).is_file()

        # the next release: its bundle proves the log only grew since 1.0.0's checkpoint
        size1 = parse_bundle(bundle1.read_bytes()).checkpoint_body().size
        art2, bundle2 = _release(tmp_path, "1.1.0", keys, log.url, size1)
        _json(
            "mirror",
            "publish",
            "--dir",
            str(honest),
            "--artifact",
            str(art2),
            "--bundle",
            str(bundle2),
        )
        r = update_cli(policy, install, [urls["tampered"], urls["honest"]], *ca)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = report(r)
        assert doc["status"] == "installed" and doc["previous_version"] == "1.0.0"
        assert [m["versions"] for m in doc["mirrors"]] == [["1.0.0"], ["1.0.0", "1.1.0"]]
        assert installed(install) == ("1.1.0", art2.read_bytes())
        assert (install / "previous" / art1.name).read_bytes() == art1.read_bytes()
        # and nothing newer: up to date, exit 0
        r = update_cli(policy, install, [urls["honest"]], *ca)
        assert r.returncode == 0 and report(r)["status"] == "up-to-date"
        # a freeze: every mirror cut off is a failure, never "up to date"
        dead = f"https://127.0.0.1:{free_port()}"
        r = update_cli(policy, install, [dead], *ca)
        doc = report(r)
        assert r.returncode == 1 and doc["status"] == "failed", r.stdout + r.stderr
        assert "no mirror answered for" in r.stderr, r.stderr
        assert installed(install) == ("1.1.0", art2.read_bytes())
    finally:
        for s in reversed(servers):
            s.stop()
