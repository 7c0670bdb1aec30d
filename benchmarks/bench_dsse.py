"""Cost of release statements: build+sign, and parse+verify an envelope (microseconds).

Measures the typical release statement (one subject, the sample recipe) and
the gate's worst case per envelope: 32 signatures, all from trusted keys,
threshold 32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from verify.dsse import sign_envelope, verify_envelope
from verify.intoto import (
    RELEASE_PREDICATE_TYPE,
    ReleasePredicate,
    Subject,
    make_statement,
    sign_statement,
    verify_statement,
)
from verify.keys import SigningKey

RECIPE = Path(__file__).resolve().parent.parent / "fixtures" / "recipes" / "hello-phar.recipe.toml"


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    from rebuild.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    key = SigningKey.generate("maintainer.bench")
    vkey = key.verifier_key()
    pred = ReleasePredicate(
        recipe.package, recipe.version, recipe.source, recipe.text, recipe.sha256
    )
    statement = make_statement([Subject("hello.phar", "0" * 64)], pred)
    envelope = sign_statement(statement, [key])
    n = 2000
    sign_us = per_call_us(lambda: sign_statement(statement, [key]), n)
    verify_us = per_call_us(
        lambda: verify_statement(envelope, [vkey], predicate_type=RELEASE_PREDICATE_TYPE), n
    )
    keys = [SigningKey.generate(f"rebuilder{i}.bench") for i in range(32)]
    big = sign_envelope(statement.to_json(), keys)
    trusted = [k.verifier_key() for k in keys]
    big_us = per_call_us(lambda: verify_envelope(big, trusted, 32), 200)
    print(f"release statement envelope: {len(envelope)} bytes")
    print(f"build + sign release statement:     {sign_us:.0f} us")
    print(f"parse + verify release statement:   {verify_us:.0f} us")
    print(f"verify envelope, 32 trusted sigs:   {big_us:.0f} us ({len(big)} bytes)")


if __name__ == "__main__":
    main()
