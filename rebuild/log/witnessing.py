"""The log as a C2SP tlog-witness client: collect cosignatures for a checkpoint.

For each new checkpoint the log POSTs ``add-checkpoint`` to every witness in
its tlog-policy (``old <size>``, a consistency proof from that size, a blank
line, the signed checkpoint), adopts the witness's size on ``409 Conflict``
and retries, and keeps only cosignatures that verify under the witness key
the policy names. It decides whether the policy's quorum is met; it never
publishes anything itself and never trusts a witness's word on a size beyond
what it can prove consistent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from rebuild.errors import TransportError, UsageError
from rebuild.log.urls import check_url
from verify.cosignature import MAX_CLOCK_SKEW, add_signatures, verify_witness_response
from verify.errors import VerifyError
from verify.note import Signature
from verify.tlog_policy import Policy, PolicyWitness

log = logging.getLogger(__name__)

MAX_RESPONSE = 64 * 1024
MAX_CONFLICT_RETRIES = 3
SIZE_CONTENT_TYPE = "text/x.tlog.size"

# proof(old_size, new_size) -> consistency proof hashes
ProofFn = Callable[[int, int], Awaitable[list[bytes]]]


class WitnessError(TransportError):
    """A witness refused, failed or answered something unusable."""


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint with the cosignature lines collected so far."""

    note: str
    witnesses: tuple[str, ...]
    quorum_met: bool


class _Witness:
    def __init__(self, spec: PolicyWitness, timeout: float) -> None:
        if spec.url is None:
            raise UsageError(f"witness {spec.name} in the policy has no URL")
        self.spec = spec
        self.url = check_url(spec.url, f"witness {spec.name} URL") + "/add-checkpoint"
        self.timeout = timeout
        self.known_size: int | None = None  # the size this witness last cosigned
        # For `rebuild log status` and for logging changes rather than every retry.
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.failures = 0  # attempts in a row that failed

    def health(self) -> dict[str, object]:
        return {
            "name": self.spec.name,
            "url": self.url.removesuffix("/add-checkpoint"),
            "ok": self.last_error is None and self.last_ok is not None,
            "cosigned_size": self.known_size,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "failures_in_a_row": self.failures,
        }

    def record(self, error: str | None) -> None:
        """Note how the last attempt ended; log a change, never a repeat."""
        now = time.time()
        if error is None:
            if self.last_error is not None:
                log.info("witness %s cosigns again", self.spec.name)
            self.last_ok, self.last_error, self.failing_since = now, None, None
            self.failures = 0
            return
        if self.last_error != error:
            log.warning("%s (retrying with back-off)", error)
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = error
        self.failures += 1

    async def cosign(
        self, session: aiohttp.ClientSession, size: int, note: str, proof: ProofFn
    ) -> list[Signature]:
        text = note[: note.index("\n\n") + 1]
        old = self.known_size if self.known_size is not None else 0
        for _ in range(MAX_CONFLICT_RETRIES + 1):
            if old > size:
                raise WitnessError(
                    f"witness {self.spec.name} has cosigned size {old}, beyond this log's {size}"
                )
            hashes = [] if old in (0, size) else await proof(old, size)
            body = (
                f"old {old}\n"
                + "".join(base64.b64encode(h).decode() + "\n" for h in hashes)
                + "\n"
                + note
            ).encode()
            try:
                async with session.post(self.url, data=body) as resp:
                    payload = await resp.content.read(MAX_RESPONSE + 1)
                    status, ctype = resp.status, resp.content_type
            except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as e:
                raise WitnessError(
                    f"witness {self.spec.name} at {self.url}: {_reason(e, self.timeout)}"
                ) from None
            if len(payload) > MAX_RESPONSE:
                raise WitnessError(f"witness {self.spec.name}: response too large")
            if status == 200:
                # The log's own clock now, plus the skew every verifier here
                # allows: a witness whose clock runs ahead cannot vouch for
                # a checkpoint's freshness it has not seen yet.
                now = int(time.time()) + MAX_CLOCK_SKEW
                try:
                    cosigs = verify_witness_response(text, payload, [self.spec.key], now=now)
                except VerifyError as e:
                    raise WitnessError(f"witness {self.spec.name}: bad cosignature: {e}") from None
                self.known_size = size
                return [c.signature for c in cosigs]
            if status == 409 and ctype == SIZE_CONTENT_TYPE:
                try:
                    old = int(payload.decode("ascii").strip())
                except (UnicodeDecodeError, ValueError):
                    raise WitnessError(f"witness {self.spec.name}: bad 409 body") from None
                if old < 0:
                    raise WitnessError(f"witness {self.spec.name}: negative size in 409")
                self.known_size = old
                continue
            snippet = payload[:200].decode("utf-8", "replace").strip()
            raise WitnessError(f"witness {self.spec.name} answered {status}: {snippet}")
        raise WitnessError(f"witness {self.spec.name}: too many 409 conflicts")


class WitnessPool:
    """All witnesses of one policy, asked concurrently for each checkpoint."""

    def __init__(self, policy: Policy, ssl_context: ssl.SSLContext, timeout: float) -> None:
        if policy.quorum == "none" or not policy.witnesses:
            raise UsageError("the witness policy names no witnesses or has 'quorum none'")
        self.policy = policy
        self._witnesses = [_Witness(w, timeout) for w in policy.witnesses if w.url is not None]
        if not self._witnesses:
            raise UsageError("no witness in the policy has a URL to reach it at")
        self._ssl = ssl_context
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit_per_host=2),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        return self._session

    async def collect(self, size: int, note: str, proof: ProofFn) -> Cosigned:
        """Ask every witness to cosign ``note``; return it with the valid cosignatures."""
        session = await self._get_session()
        results = await asyncio.gather(
            *(w.cosign(session, size, note, proof) for w in self._witnesses),
            return_exceptions=True,
        )
        lines: list[Signature] = []
        names: list[str] = []
        keys = []
        for w, r in zip(self._witnesses, results, strict=True):
            if isinstance(r, BaseException):
                if not isinstance(r, WitnessError | UsageError):
                    raise r
                w.record(str(r))
                continue
            w.record(None)
            lines.extend(r)
            names.append(w.spec.name)
            keys.append(w.spec.key)
        result = self.policy.evaluate(keys)
        return Cosigned(add_signatures(note, lines), tuple(names), result.satisfied)

    def health(self) -> list[dict[str, object]]:
        """Each witness: reachable or why not, since when, the size it last cosigned."""
        return [w.health() for w in self._witnesses]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reason(e: BaseException, timeout: float) -> str:
    """``connection refused``, not aiohttp's repr of its connector's exception."""
    if isinstance(e, TimeoutError):
        return f"no answer within {timeout:g} s"
    os_error = getattr(e, "os_error", None)
    if isinstance(os_error, OSError) and os_error.errno:
        return f"cannot connect: {os.strerror(os_error.errno).lower()}"
    if isinstance(e, ssl.SSLError | aiohttp.ClientSSLError):
        return f"TLS error: {e}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return f"{type(e).__name__}: {e}"
