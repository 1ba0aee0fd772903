"""Retries with backoff for failures that can be transient; none for bad input.

The MLflow-logging and IO-heavy assets carry :data:`TRANSIENT_RETRY`: a failed step is retried
twice, after ~2 s and ~6 s (exponential backoff with jitter) — a locked sqlite store, an MLflow
server that is restarting, a file system hiccup. Retrying cannot fix bad input (a missing or stale
artefact, an unreadable file, a wrong shape, an unknown model), so :func:`fail_fast` turns those
exceptions into a Dagster ``Failure`` that skips the retry policy and keeps the original error
as its cause (``eap-assets run`` reports that cause). ``execute_in_process`` (what ``make run``
uses) honours retry policies: the step is re-executed in the same process after the delay.
"""

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from eap_assets.core import cells, mechanisms
from eap_assets.registry import RegistryError
from eap_assets.core.eaps import AcceptanceError
from eap_assets.core.intracellular import SpikeTargetError
from eap_assets.core.stages import StaleInputError

#: Retry policy of the MLflow-logging and IO-heavy assets.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

#: Exceptions that mean bad input: the same input fails the same way again.
BAD_INPUT: tuple[type[BaseException], ...] = (
    ValueError, KeyError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
    StaleInputError, cells.CellModelError, mechanisms.MechanismError, SpikeTargetError, AcceptanceError, RegistryError,
)


@contextmanager
def no_retry_for_bad_input() -> Iterator[None]:
    """Re-raise a :data:`BAD_INPUT` exception as a ``Failure`` that bypasses retry policies."""
    try:
        yield
    except BAD_INPUT as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc


def fail_fast(fn: Callable) -> Callable:
    """Decorator (below ``@dg.asset``): bad input fails the step at once, other errors follow the retry policy.
    A generator (a multi-asset yielding its outputs) is guarded while Dagster iterates it."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with no_retry_for_bad_input():
                yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with no_retry_for_bad_input():
            return fn(*args, **kwargs)

    return wrapper
