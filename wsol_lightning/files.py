"""Result files that are whole or absent: written beside their target, then renamed over it.

A reader (or a rerun after Ctrl-C, SIGTERM or SIGKILL) sees the previous file or the new one,
never a truncated one: the temporary file lies in the target's directory, so the rename stays on
one filesystem, where POSIX makes it atomic. A write stopped by an exception removes its
temporary file; a SIGKILL leaves at most a hidden ``.<name>.<pid>.<random>.tmp`` beside it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from wsol_lightning.errors import WSOLInputError

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def replaced_atomically(path: PathLike, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents to; renamed over ``path`` when the block ends.

    Args:
        path: the target (its folders are created).
        durable: fsync the file before the rename (a checkpoint: survives a power cut too).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with replaced_atomically(path) as file:
        file.write(text.encode("utf-8"))
    return Path(path)


def probe_writable(directory: Path) -> None:
    """Write and remove an empty hidden file in ``directory`` (which exists): raises ``OSError`` where a result
    could not be written there (permissions, a read-only filesystem)."""
    probe = directory / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    probe.unlink()


def check_writable(path: PathLike, flag: str, directory: bool = False) -> None:
    """Refuse now, in one line naming ``flag`` and ``path``, an output that could not be written later.

    A run should not train or evaluate for minutes and then fail on its output path.

    Args:
        path: the output file (or folder, with ``directory``); its missing folders would be created.
        flag: the flag that gave it (``--json``), for the message.
        directory: ``path`` is a folder to write into, not a file.
    """
    target = Path(path)
    if target.exists() and target.is_dir() != directory:
        raise WSOLInputError(f"{flag} {path}: " + ("not a directory" if directory else "is a directory"))
    ancestor = (target if directory else target.parent).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WSOLInputError(f"{flag} {path}: {ancestor} is not a directory")
    try:
        probe_writable(ancestor)
    except OSError:
        raise WSOLInputError(f"{flag} {path}: {ancestor} is not writable") from None
