"""``HOST:PORT``, the one parser behind every ``--listen`` and ``--metrics`` flag.

``[::1]:8080`` (brackets for IPv6), ``127.0.0.1:0`` (port 0: any free
port). The port is an ASCII decimal in 0..65535 (:func:`verify.parsing.parse_decimal`):
``str.isdigit`` would let ``²`` or ``٣`` through to ``int()``. Standard
library only, so the CLI can parse its flags before loading a server.
"""

from __future__ import annotations

from rebuild.errors import UsageError
from verify.parsing import parse_decimal

MAX_PORT = 65535


def parse_listen(spec: str, flag: str = "--listen") -> tuple[str, int]:
    """The host (brackets removed) and port of ``spec``.

    Raises UsageError naming ``flag`` when ``spec`` is not HOST:PORT.
    """
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")

    def refuse(problem: str) -> UsageError:
        return UsageError(f"{flag} {spec!r}: expected HOST:PORT ({problem})")

    if not sep or not host:
        raise refuse("no host")
    return host, parse_decimal(port, "port", refuse, maximum=MAX_PORT)
