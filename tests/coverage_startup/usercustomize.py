"""Start coverage in a process the tests run as another user (tests/updaterutil.py).

Every other Python process the tests start is measured by the hook coverage
installs into the virtual environment (a ``.pth`` file). A process run as
another user runs the system's interpreter with the environment's packages on
PYTHONPATH, and Python reads ``.pth`` files only in its site directories, so
that hook never runs there. Python does import ``usercustomize`` from its path
at start-up: this directory is put on that process's PYTHONPATH only when the
tests run under coverage. It does nothing else.
"""

try:
    import coverage
except ImportError:  # the process runs without the environment's packages
    pass
else:
    coverage.process_startup()
