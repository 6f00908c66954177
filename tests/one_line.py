"""The package's refusal contract, checked the same way by every test: what the user reads is one line.

A refusal is a :class:`WSOLInputError`; a script's ``exit_on_input_error`` turns it
into ``error: <message>`` as the only and last line of stderr and exit status 2.
``WSOLInputError`` also folds newlines into spaces, as a safety net, so checking
``"\\n" not in str(error)`` would prove nothing. Instead :func:`one_line_error`

* runs the call through the scripts' own guard and checks what the user sees:
  exit status 2 and stderr exactly ``error: <message>\\n``;
* checks the message the package *wrote* (before the folding) is already one
  stripped, non-empty line: a message built from multi-line text (a library's
  error, a traceback, a file's content) would otherwise reach the user as a
  run-on line with its line breaks silently turned into spaces.
"""

import contextlib
import io
from typing import Any, Callable, Dict, List, Type
from unittest import mock

import pytest

from wsol_lightning.errors import INPUT_ERROR_EXIT_CODE, WSOLInputError, exit_on_input_error


def one_line_error(function: Callable[..., Any], *args: Any, expected: Type[Exception] = WSOLInputError,
                   **kwargs: Any) -> str:
    """Call ``function(*args, **kwargs)`` as a script would; it must be refused with one line.

    Args:
        function: the call under test.
        expected: the ``WSOLInputError`` subclass it must raise.

    Returns:
        The message the user reads after ``error: ``, for the caller's own checks of what it names.
    """
    written: Dict[int, str] = {}
    raised: List[BaseException] = []
    original_init = WSOLInputError.__init__

    def recording_init(self, message):
        written[id(self)] = str(message)
        original_init(self, message)

    def call():
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            raised.append(error)
            raise

    stderr = io.StringIO()
    with mock.patch.object(WSOLInputError, "__init__", recording_init), contextlib.redirect_stderr(stderr):
        with pytest.raises(SystemExit) as exit_info:
            exit_on_input_error(call)()
    error = raised[-1]
    assert isinstance(error, expected), f"{type(error).__name__} raised, {expected.__name__} expected"
    assert exit_info.value.code == INPUT_ERROR_EXIT_CODE
    message = str(error)
    assert stderr.getvalue() == f"error: {message}\n", stderr.getvalue()
    raw = written[id(error)]
    assert raw and raw == raw.strip() and "\n" not in raw, f"message written on several lines: {raw!r}"
    return message
