"""One error type for bad input, and the guard that turns it into one line.

Every input that enters the package (metadata files, images, score maps, flags,
search spaces, storage URLs) is validated where it enters; a problem raises
:class:`WSOLInputError` whose message is one line naming the thing at fault
(``path:line: what is wrong`` for files). Scripts wrap ``main`` in
:func:`exit_on_input_error` so the process exits non-zero with exactly that line
as the last line of stderr, instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., object])

#: Exit status of a script refused for bad input.
INPUT_ERROR_EXIT_CODE = 2


class WSOLInputError(ValueError):
    """Bad user input; the message is a single line naming the thing at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")))


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as the last line of stderr and exit with status 2."""
    sys.stderr.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(INPUT_ERROR_EXIT_CODE)


def exit_on_input_error(main: F) -> F:
    """Decorate a script's ``main`` so :class:`WSOLInputError` exits with one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except WSOLInputError as error:
            fail(str(error))

    return wrapper  # type: ignore[return-value]
