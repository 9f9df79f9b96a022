"""Errors the user can fix.

Every problem with input, configuration or output locations is raised as a
:class:`GeosegError` whose message is one line naming the file and the problem.
The CLI prints it as ``geoseg: error: <message>`` and exits non-zero, without a
traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import os


class GeosegError(Exception):
    """A problem the user can fix, reported as one line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        text = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {text}" if self.path else text)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (temporaries are discarded on the way out), exit status 143."""
