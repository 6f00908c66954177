"""The package's refusal contract, checked the same way by every test: a ``WSOLInputError`` in one line."""

from typing import Any, Callable, Type

import pytest

from wsol_lightning.errors import WSOLInputError


def one_line_error(function: Callable[..., Any], *args: Any, expected: Type[Exception] = WSOLInputError,
                   **kwargs: Any) -> str:
    """Call ``function(*args, **kwargs)``; it must raise ``expected`` (a ``WSOLInputError``) in one line.

    Returns:
        The error's message, for the caller's own checks of what it names.
    """
    with pytest.raises(expected) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, WSOLInputError)
    return message
