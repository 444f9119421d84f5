"""Real faults for the reliability tests: strace injects them into a running process."""

from __future__ import annotations

from collections.abc import Sequence


def strace_inject(syscall: str, fault: str, when: int | str, argv: Sequence[str]) -> list[str]:
    """``argv`` under strace, with ``fault`` (``signal=KILL``, ``error=EIO``,
    ``delay_enter=1000000``...) injected at the ``when``-th call of ``syscall`` (a name, or
    several joined by commas) in the process or any of its threads."""
    return [
        "strace", "-f", "-qq", "-o", "/dev/null",
        "-e", f"trace={syscall}",
        "-e", f"inject={syscall}:{fault}:when={when}",
        *argv,
    ]  # fmt: skip
