"""The shipped systemd files are valid and lay out what the daemon accepts.

Real ``systemd-sysusers``, ``systemd-tmpfiles`` and ``systemd-analyze`` run
against containers/updater/ (into a scratch root directory, never the host's
own /etc or /var); the daemon's own preflight check then runs as the user
sysusers made, on the spool tmpfiles made.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

from tests.logutil import ROOT
from tests.updaterutil import User, run_as

UNITS = ROOT / "containers" / "updater"


def _ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"{name} not in {root}/etc/passwd")


def test_sysusers_and_tmpfiles_make_the_spool_the_daemon_accepts() -> None:
    with tempfile.TemporaryDirectory(prefix="rebuild-systemd-", dir="/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "etc").mkdir()
        (root / "etc" / "passwd").write_text(
            "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n"
        )
        (root / "etc" / "group").write_text("root:x:0:\nwww-data:x:33:\n")
        subprocess.run(
            ["systemd-sysusers", f"--root={root}", str(UNITS / "rebuild-updater.sysusers.conf")],
            check=True,
            capture_output=True,
        )
        uid, gid = _ids(root, "rebuild-updater")
        assert uid != 0
        subprocess.run(
            [
                "systemd-tmpfiles",
                "--create",
                f"--root={root}",
                str(UNITS / "rebuild-updater.tmpfiles.conf"),
            ],
            check=True,
            capture_output=True,
        )
        spool = root / "var" / "spool" / "rebuild-updater"
        layout = {
            p.name: (p.stat().st_uid, p.stat().st_gid, stat.S_IMODE(p.stat().st_mode))
            for p in (spool / "requests", spool / "status", root / "srv" / "php-app")
        }
        assert layout == {
            "requests": (uid, 33, 0o1730),
            "status": (uid, 33, 0o750),
            "php-app": (uid, gid, 0o755),
        }
        for p in (root / "var", root / "var" / "spool", spool, root / "srv"):
            os.chmod(p, 0o755)
        # the daemon's own check, as the user sysusers made
        r = run_as(
            User("rebuild-updater", uid, gid),
            "-c",
            "import sys; from pathlib import Path; from rebuild.updater.daemon import check_spool; "
            "check_spool(Path(sys.argv[1])); print('accepted')",
            str(spool),
        )
        assert r.stdout.strip() == "accepted", r.stderr


def test_the_service_unit_verifies(tmp_path: Path) -> None:
    unit = (UNITS / "rebuild-updater.service").read_text()
    assert (
        "User=rebuild-updater" in unit and "ExecStart=/usr/local/bin/rebuild updater daemon" in unit
    )
    # systemd-analyze wants the program to exist; everything else is checked as shipped
    copy = tmp_path / "rebuild-updater.service"
    copy.write_text(unit.replace("/usr/local/bin/rebuild", "/bin/true"))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
