"""The one user-facing exception type and its exit codes.

Anything raised that is not an ``EdgebuildError`` is a bug in edgebuild and keeps
its traceback; an ``EdgebuildError`` is a user's problem and is printed in one line.
"""

from __future__ import annotations

from typing import Any

EXIT_BUILD = 1
EXIT_CONFIG = 2
EXIT_BUDGET = 3


class EdgebuildError(Exception):
    """A failure the user can fix: what is wrong, where, and what to do.

    ``message`` names what is wrong and where (file and key, or stage); ``hint``
    says what to do; ``exit_code`` is 2 for usage or configuration, 1 for a build
    failure, 3 for a missed budget.
    """

    exit_code = EXIT_BUILD

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        one_line = " ".join(self.message.split())
        if self.hint:
            one_line += f" ({' '.join(self.hint.split())})"
        return one_line


class ConfigError(EdgebuildError):
    """A recipe, target profile or command line that cannot be used as written (exit 2)."""

    exit_code = EXIT_CONFIG


class BuildError(EdgebuildError):
    """A build stage that could not do its work (exit 1)."""

    exit_code = EXIT_BUILD


class BudgetError(EdgebuildError):
    """A build that worked but missed one of the target's budgets (exit 3); ``report`` is the
    build's report when it got that far (nothing was published)."""

    exit_code = EXIT_BUDGET
    report: dict[str, Any] | None = None
