"""Release version ordering for the gate's no-downgrade rule (step 7).

The gate must say whether one release version is newer than another, and a
wrong answer is a downgrade. So this module accepts only a strict subset of
PEP 440 whose order is unambiguous and refuses everything else (fail closed:
a version that cannot be ordered cannot be installed):

    version := release [pre] [".post" N] [".dev" N]
    release := N ("." N)*                (1 to 16 components)
    pre     := ("a" | "b" | "rc") N
    N       := "0" | [1-9][0-9]*         (at most 18 digits, no leading zeros)

Examples: ``1.0.0``, ``2.1``, ``1.0rc1``, ``1.0.post2``, ``3.0.0a1.dev4``.
Refused: epochs (``1!2.0``), local versions (``1.0+local``), a ``v`` prefix,
upper case, separators other than the ones above, semver pre-releases
(``1.0.0-rc.1``) and leading zeros (``1.01``), so that one text never has two
readings. Order is PEP 440's: trailing zero components do not count (``1.0``
equals ``1.0.0``), ``1.0.dev1 < 1.0a1 < 1.0b1 < 1.0rc1 < 1.0 < 1.0.post1``,
and a ``.devN`` sorts before the same version without it. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from verify.errors import VersionError

MAX_VERSION_LENGTH: Final = 128
MAX_RELEASE_COMPONENTS: Final = 16

_NUM = r"(?:0|[1-9][0-9]{0,17})"
_VERSION = re.compile(
    rf"(?P<release>{_NUM}(?:\.{_NUM}){{0,{MAX_RELEASE_COMPONENTS - 1}}})"
    rf"(?:(?P<pre_l>a|b|rc)(?P<pre_n>{_NUM}))?"
    rf"(?:\.post(?P<post>{_NUM}))?"
    rf"(?:\.dev(?P<dev>{_NUM}))?"
)
_PRE_RANK: Final = {"a": 0, "b": 1, "rc": 2}
# Sort keys standing in for PEP 440's "before everything" / "after everything".
_BEFORE: Final = -1
_AFTER: Final = 3


@dataclass(frozen=True, order=True)
class Version:
    """A parsed version; compares by PEP 440 order (``key``), prints as written.

    Made by :func:`parse_version`; comparing never raises.
    """

    key: tuple[tuple[int, ...], tuple[int, int], int, tuple[int, int]]
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> Version:
    """Parse ``text`` in the accepted PEP 440 subset (see the module docstring).

    Raises VersionError (a FormatError) for anything outside it.
    """
    if not isinstance(text, str) or not text:
        raise VersionError("version must be a non-empty string")
    if len(text) > MAX_VERSION_LENGTH:
        raise VersionError(f"version is longer than {MAX_VERSION_LENGTH} characters")
    m = _VERSION.fullmatch(text)
    if m is None:
        raise VersionError(
            f"version {text!r} cannot be ordered: use the PEP 440 subset "
            "N(.N)*[aN|bN|rcN][.postN][.devN] without leading zeros"
        )
    release = [int(p) for p in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:  # 1.0 == 1.0.0
        release.pop()
    dev = m["dev"]
    if m["pre_l"] is not None:
        pre = (_PRE_RANK[m["pre_l"]], int(m["pre_n"]))
    elif m["post"] is None and dev is not None:
        pre = (_BEFORE, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (_AFTER, 0)  # a final release sorts after its pre-releases
    post = _BEFORE if m["post"] is None else int(m["post"])
    dev_key = (1, 0) if dev is None else (0, int(dev))
    return Version((tuple(release), pre, post, dev_key), text)


def is_newer(candidate: str, installed: str) -> bool:
    """True when ``candidate`` orders strictly after ``installed``.

    Raises VersionError when either cannot be ordered.
    """
    return parse_version(candidate) > parse_version(installed)
