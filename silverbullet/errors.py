"""One exception type for expected user mistakes, so the CLI can print one line and exit 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad path, bad field, bad option). The message says what to do."""
