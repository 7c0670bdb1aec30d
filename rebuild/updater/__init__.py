"""Delivering updates: mirrors, HTTPS downloads with failover, the atomic installer,
and the privilege-separated request/daemon pair.

Nothing here decides trust; every install goes through the gate
(:mod:`rebuild.updater.gateway`). The pieces are library functions so other
commands (``rebuild demo``) can compose them:

- :mod:`rebuild.updater.mirror`: the ``rebuild-mirror/v1`` layout and ``publish``;
- :mod:`rebuild.updater.serve`: a static mirror server (aiohttp);
- :mod:`rebuild.updater.fetch`: bounded HTTPS downloads (aiohttp);
- :mod:`rebuild.updater.install`: lock, journal, stage, switch, health check, roll back;
- :mod:`rebuild.updater.update`: ``run_update``, the orchestrator;
- :mod:`rebuild.updater.spool` and :mod:`rebuild.updater.daemon`: the web user
  asks, the updater's user acts.
"""
