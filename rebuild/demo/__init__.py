"""``rebuild demo``: the whole secure-update story on one machine, with real components.

:mod:`rebuild.demo.story` tells it (and checks every expected outcome),
:mod:`rebuild.demo.procs` starts the ``rebuild`` processes it drives,
:mod:`rebuild.demo.tls` makes the run's certificate authority, and
:mod:`rebuild.demo.model` holds what a run reports.
"""
