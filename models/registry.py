"""The one lookup every name-keyed table of the models package uses (methods, losses, schedules)."""

from typing import TypeVar

T = TypeVar("T")


def lookup(table: dict[str, T], name: str, what: str) -> T:
    """table[name], or a ValueError that names ``what`` was asked for and lists the valid names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {sorted(table)}")
    return table[name]
