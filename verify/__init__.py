"""Consumer side of rebuild: decide from bytes whether to trust a release.

Everything in this package runs with PyNaCl and the Python standard library
alone, so that an updater can vendor it. It decides; it never fetches, never
installs and never prints. I/O lives in thin callers (``rebuild`` and the
updater's orchestrator).
"""

__version__ = "0.1.0"
