"""Ed25519 sign/verify cost through verify.keys (one figure each, microseconds)."""

from __future__ import annotations

import time

from verify.keys import SigningKey


def main() -> None:
    key = SigningKey.generate("bench")
    vkey = key.verifier_key()
    msg = b"x" * 256
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        sig = key.sign_raw(msg)
    t1 = time.perf_counter()
    for _ in range(n):
        vkey.verify_raw(msg, sig)
    t2 = time.perf_counter()
    print(f"ed25519 sign:   {(t1 - t0) / n * 1e6:.1f} us")
    print(f"ed25519 verify: {(t2 - t1) / n * 1e6:.1f} us")


if __name__ == "__main__":
    main()
