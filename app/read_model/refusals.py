"""Redis nodes that answer but refuse this service's commands, named so operators see why.

A Redis Cluster node answers PING and SUBSCRIBE but refuses keyed commands (MOVED to the node
owning the key's slot, CLUSTERDOWN while slots are unserved); a replica given where the service
writes refuses with READONLY. Retrying cannot help either: these are configuration errors.
"""

from __future__ import annotations

import logging

from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

log = logging.getLogger(__name__)

CLUSTER = "cluster"
READ_ONLY = "read-only"
# redis-py parses MOVED and ASK (AskError), CLUSTERDOWN (a ClusterError), CROSSSLOT, TRYAGAIN
_CLUSTER_ERRORS = (AskError, ClusterError, ClusterCrossSlotError, TryAgainError)
_EXPLAINED = {
    CLUSTER: "Redis answers as a Redis Cluster node ({error}); this service needs one primary "
             "(optionally with replicas or Sentinel), not a cluster: see docs/operations.md",
    READ_ONLY: "Redis refuses writes ({error}): REDIS_URL names a replica; give the primary "
               "(or REDIS_SENTINELS) and put replicas in REDIS_READ_URL",
}


def refusal(error: BaseException) -> str | None:
    """CLUSTER or READ_ONLY when `error` is such a refusal, else None."""
    if isinstance(error, ReadOnlyError):
        return READ_ONLY
    if isinstance(error, _CLUSTER_ERRORS):
        return CLUSTER
    if isinstance(error, ResponseError) and "READONLY" in str(error):  # (inside a script)
        return READ_ONLY
    return None


def explain(kind: str, error: object) -> str:
    """The operator's sentence for a refusal of `kind`."""
    text = str(error).split("\n")[0][:160]
    if isinstance(error, BaseException):  # redis-py's MOVED error says only "slot host:port"
        text = f"{type(error).__name__}: {text}"
    return _EXPLAINED[kind].format(error=text)


class RefusalLog:
    """Logs a refusal at ERROR once when it begins (or changes kind), and once when it ends."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._state: str | None = None

    def saw(self, error: BaseException) -> bool:
        """Log `error` if it starts a refusal; True when it is one."""
        kind = refusal(error)
        if kind is not None and kind != self._state:
            log.error("%s: %s", self._where, explain(kind, error))
        if kind is not None:
            self._state = kind
        return kind is not None

    def cleared(self) -> None:
        if self._state is not None:
            log.info("%s: Redis answers again", self._where)
            self._state = None
