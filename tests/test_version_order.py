"""Version ordering for the no-downgrade rule: PEP 440 order on a strict subset.

A wrong order is a downgrade, so every pair below is checked both ways, and
every text outside the subset is refused rather than guessed at.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verify.errors import VersionError
from verify.version import is_newer, parse_version

# Strictly increasing, PEP 440's own examples of the order among others.
ASCENDING = [
    "0.1",
    "0.9.9",
    "1.0.dev1",
    "1.0a1.dev1",
    "1.0a1",
    "1.0a2",
    "1.0b1",
    "1.0rc1",
    "1.0rc1.post1",
    "1.0",
    "1.0.post1.dev1",
    "1.0.post1",
    "1.0.1",
    "1.1.dev1",
    "1.1",
    "1.10",
    "2.0.0",
    "10.0",
]


@pytest.mark.parametrize("i", range(len(ASCENDING) - 1))
def test_newer_versions_order_after_older_ones(i: int) -> None:
    old, new = ASCENDING[i], ASCENDING[i + 1]
    assert is_newer(new, old), (new, old)
    assert not is_newer(old, new), (old, new)


def test_trailing_zeros_do_not_count() -> None:
    assert parse_version("1.0") == parse_version("1.0.0") == parse_version("1")
    assert not is_newer("1.0.0", "1.0")
    assert not is_newer("1.0", "1.0.0")


def test_numeric_not_lexicographic() -> None:
    assert is_newer("1.10", "1.9")
    assert is_newer("1.0.10", "1.0.9")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v1.0",
        "1.0-rc.1",  # semver pre-release: not in the subset
        "1.0.0+local",
        "1!2.0",
        "1.01",  # leading zero: one text, one reading
        "01.0",
        "1.0RC1",
        "1.0c1",
        "1.0.rc1",
        "1.0-1",
        "1..0",
        "1.0.",
        ".1",
        "1.0 ",
        "1.0\n",
        "latest",
        "1" + ".0" * 16,  # 17 components
        "1" * 19,  # beyond 18 digits
        "١.٠",  # non-ASCII digits
    ],
)
def test_versions_outside_the_subset_are_refused(text: str) -> None:
    with pytest.raises(VersionError):
        parse_version(text)


@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
)
def test_release_order_matches_tuple_order_without_trailing_zeros(
    a: list[int], b: list[int]
) -> None:
    def norm(x: list[int]) -> tuple[int, ...]:
        y = list(x)
        while len(y) > 1 and y[-1] == 0:
            y.pop()
        return tuple(y)

    va = parse_version(".".join(map(str, a)))
    vb = parse_version(".".join(map(str, b)))
    assert (va < vb) == (norm(a) < norm(b))
    assert (va == vb) == (norm(a) == norm(b))
