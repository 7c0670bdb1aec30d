"""``HOST:PORT``: the one parser behind every ``--listen`` and ``--metrics`` flag, and binding it.

``[::1]:8080`` (brackets for IPv6), ``127.0.0.1:0`` (port 0: any free
port). The port is an ASCII decimal in 0..65535 (:func:`verify.parsing.parse_decimal`):
``str.isdigit`` would let ``²`` or ``٣`` through to ``int()``. Standard
library only, so the CLI can parse its flags before loading a server.
"""

from __future__ import annotations

import socket

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


def listen_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (the first resolves port 0).

    More than one share the address with ``SO_REUSEPORT`` (one per log
    front-end process). Raises UsageError when the address cannot be bound.
    """
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {where}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            addr = (addr[0], s.getsockname()[1], *addr[2:])
            s.listen(backlog)
    except OSError as e:
        for s in socks:
            s.close()
        raise UsageError(f"cannot listen on {where}: {e.strerror}") from None
    return socks
