"""The rebuild engine: build plans, the verify pipeline and its result."""
