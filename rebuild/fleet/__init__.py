"""The rebuilder fleet: follow new releases and rebuild them on many machines.

A watcher finds new targets (release statements in the audit log, new
versions on the package index) and enqueues each once; workers run the
``rebuild verify`` pipeline on their own Docker engine and hand back a result;
one publisher, the only holder of the rebuilder's key, signs each result and
adds it to the log exactly once. Jobs travel through Dramatiq on Redis
(docs/fleet.md). Nothing in this package is imported at CLI start-up.
"""
