"""The audit log server: sequencing, tile storage, HTTP API, witnessing.

Producer side of issue 3. Everything that decides whether a proof or a
checkpoint is trustworthy lives in :mod:`verify`; this package only builds
and serves the log, and never trusts a root it did not recompute from tiles.
"""
