"""Child processes that must not outlive the gateway (or the bench) that started them."""

from __future__ import annotations

import signal

try:  # looked up at import, not in a child between fork and exec
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError, ImportError):
    _prctl = None

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: the kernel sends it SIGTERM when its parent dies, however it dies (Linux only;
    elsewhere nothing happens)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
