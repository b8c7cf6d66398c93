"""The domain errors services raise; ``app.main`` maps each kind to its HTTP status once.

Services never know HTTP: they raise the kind that says what went wrong (not found, a state conflict,
invalid input), and the message is the client's precise reason (no PHI: ids and rules only).
"""

from __future__ import annotations


class DomainError(Exception):
    """Base: a caller's mistake or a state that forbids the request. 400 unless a kind says otherwise."""

    status_code = 400


class NotFound(DomainError, LookupError):
    status_code = 404


class Conflict(DomainError, ValueError):
    """The request is valid but the current state forbids it (taken, finished, fenced off)."""

    status_code = 409


class Invalid(DomainError, ValueError):
    """The request's content is well-formed but unacceptable (wrong geometry, wrong kind)."""

    status_code = 422


class TooMany(DomainError):
    """A quota is full (too many jobs waiting or running): the same request may succeed later."""

    status_code = 429
