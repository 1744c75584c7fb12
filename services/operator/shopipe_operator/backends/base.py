"""The small interface every backend offers the reconcile loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shopipe.errors import PermanentError, TransientError


@dataclass(frozen=True)
class Pod:
    """One pipeline process: its name (as in its Redis connection name) and /status URL."""

    name: str
    status_url: str | None


class BackendUnavailable(TransientError):
    """The backend did not answer (API server down, timeouts, throttling); try again later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendError(PermanentError):
    """The backend refused (RBAC forbids, object missing); ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    """What the loop needs. Every method may raise BackendUnavailable."""

    name: str
    # False where one operator acts alone (the dev stack's local backend): no Lease to hold.
    leader_election: bool

    async def current_replicas(self) -> int: ...

    async def scale(self, replicas: int) -> None: ...

    async def pods(self) -> list[Pod]:
        """Pipeline pods (receivers, workers) to check for a stale master."""
        ...

    async def restart(self, pod: Pod, reason: str) -> str:
        """Restart ``pod``; returns the outcome: ``evicted``, ``restarted``, ``gone`` (it
        no longer exists) or ``blocked`` (a disruption budget said not now)."""
        ...

    async def scale_owner(self) -> str | None:
        """Who else scales the workers (``HorizontalPodAutoscaler/<name>``), or None."""
        ...

    async def event(self, reason: str, message: str, pod: str | None = None) -> None:
        """Record a decision where the cluster's users look (Kubernetes Events)."""
        ...

    async def close(self) -> None: ...
