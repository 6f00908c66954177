"""Command-line argument lists as scripts rebuild them (a resume command, a worker's arguments)."""

from __future__ import annotations

from typing import List, Optional, Sequence


def without_flag(argv: Sequence[str], flag: str) -> List[str]:
    """``argv`` without ``flag``, whether given as ``flag VALUE`` or ``flag=VALUE``."""
    kept: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(f"{flag}="):
            kept.append(arg)
    return kept


def has_flag(argv: Sequence[str], flag: str) -> bool:
    """Whether ``argv`` gives ``flag`` (as ``flag VALUE`` or ``flag=VALUE``)."""
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in argv)


def flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value ``argv`` gives ``flag`` (``flag VALUE`` or ``flag=VALUE``; the first), or None."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{flag}="):
            return arg[len(flag) + 1:]
    return None
