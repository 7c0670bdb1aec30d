"""Producer side of rebuild: recipes, environments, builds, comparison,
attestations, the log server and the witness.

The command-line interface lives in :mod:`rebuild.cli`; everything else raises
typed errors from :mod:`rebuild.errors` and never exits or prints.
"""

__version__ = "0.1.0"
