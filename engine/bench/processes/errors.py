"""The bench's one error: a process would not start or answer."""


class BenchError(Exception):
    """A process of the bench would not start or answer; the message says which and why."""
