"""A dict bounded in bytes, oldest entries out first: what the phones' endpoint keeps per request.

Its keys are what a client sends (paths, User-Agents, ``Authorization``), so the bound is in
bytes, not entries: an entry costs its key's characters plus the subclass's ``ENTRY_BYTES``,
and long keys cannot multiply it. Lookups do not reorder (a hit is one dict lookup; subclasses
read ``_entries`` directly on their hot path). The order of entries is kept in a deque beside
the dict: taking the oldest with ``next(iter(dict))`` costs a scan past every entry deleted
since the dict was last resized, which at 100,000 devices made the evictions a quarter of the
phones' processes' CPU. A deque rather than an ``OrderedDict`` (as the failure limiter and
discovery use): 8 bytes an entry against ~40, in caches that hold an entry per device.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

K = TypeVar("K", bound=tuple[str, ...])
V = TypeVar("V")


class BytesBounded(Generic[K, V]):
    ENTRY_BYTES = 0
    """What an entry costs beside its key's characters (each subclass measures its own)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[K, V] = {}
        self._order: deque[K] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, key: K, value: V, *, replace: bool) -> None:
        """Keep ``value`` under ``key`` (``replace``: also when the key is kept already), then
        drop the oldest entries until the bound holds. A key larger than the bound is not kept."""
        if key in self._entries:
            if replace:
                self._entries[key] = value
            return
        cost = self._cost(key)
        if cost > self.max_bytes:
            return
        self._entries[key] = value
        self._order.append(key)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            oldest = self._order.popleft()
            del self._entries[oldest]
            self.bytes -= self._cost(oldest)

    def _cost(self, key: K) -> int:
        return self.ENTRY_BYTES + sum(map(len, key))
