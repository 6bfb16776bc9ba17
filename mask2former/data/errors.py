"""The error raised for broken dataset files and bad annotations."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent.

    The message always names the offending file (and the annotation when there is one) so that a
    user with thousands of files can find and fix the broken one.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Pickled with both arguments (the default passes only the message), so the error
        # crosses process boundaries (data-loading workers) intact.
        return type(self), (self.path, self.problem)
