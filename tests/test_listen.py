"""HOST:PORT flags: one parser, and a hostile port is a usage error, not a traceback."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from rebuild import metrics
from rebuild.errors import UsageError
from rebuild.listen import parse_listen


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:8080", ("::1", 8080)), ("h:65535", ("h", 65535))],
)
def test_host_and_port(spec: str, expected: tuple[str, int]) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "127.0.0.1",  # no port
        ":8080",  # no host
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:080",  # leading zero: one port, one spelling
        "127.0.0.1:\u00b2",  # superscript two: isdigit() but int() raises ValueError
        "127.0.0.1:\u0663",  # Arabic-Indic three: isdigit() and int() == 3
        "127.0.0.1: 80",
        "127.0.0.1:",
    ],
)
def test_anything_else_is_a_usage_error_naming_the_flag(spec: str) -> None:
    with pytest.raises(UsageError, match="--listen"):
        parse_listen(spec)


def test_metrics_flag_refuses_a_non_ascii_port_before_listening() -> None:
    with pytest.raises(UsageError, match="--metrics"):
        metrics.serve("127.0.0.1:\u00b2", CollectorRegistry())
