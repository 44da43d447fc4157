"""Errors that carry every problem found, one line each, so an operator fixes them all at once."""

from __future__ import annotations


class ErrorList(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
