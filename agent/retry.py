"""Retrying transient backend failures: exponential backoff, full jitter, a cap, Retry-After.

Built on tenacity. The wait is interruptible: SIGINT/SIGTERM set the stop event and the
agent stops between attempts with its cursors saved.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

__all__ = ["RetryPolicy", "Stopped", "TransientFailure", "call_with_retries"]

T = TypeVar("T")


class TransientFailure(Exception):
    """A failure worth retrying; ``retry_after`` is the backend's own hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Stopped(Exception):
    """The agent was asked to stop while waiting to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 8


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, stop: threading.Event,
                      on_retry: Callable[[TransientFailure, float], None] | None = None) -> T:
    """Call ``fn`` until it does not raise :class:`TransientFailure`, within the policy.

    Raises the last :class:`TransientFailure` when attempts run out, :class:`Stopped` when
    ``stop`` is set during a wait.
    """
    jitter = wait_random_exponential(multiplier=policy.initial, max=policy.maximum)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = jitter(state)
        if isinstance(exc, TransientFailure) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, policy.maximum * 10))
        if on_retry is not None and isinstance(exc, TransientFailure):
            on_retry(exc, delay)
        return delay

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped()

    retrying = Retrying(
        retry=retry_if_exception_type(TransientFailure),
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)
