"""Per-vendor device adapters and their registry.

The registry is this explicit list: adding a vendor is one module, one template folder and one
line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, auto
from types import MappingProxyType
from typing import Final

from provisioner.bounded import BytesBounded
from provisioner.devices import gigaset, grandstream, mitel, poly, snom, yealink
from provisioner.devices.base import Adapter, FileRequest, ModelInfo

ADAPTERS: Mapping[str, Adapter] = MappingProxyType(
    {
        adapter.vendor: adapter
        for adapter in (
            yealink.ADAPTER,
            snom.ADAPTER,
            gigaset.ADAPTER,
            poly.ADAPTER,
            grandstream.ADAPTER,
            mitel.ADAPTER,
        )
    }
)


#: What :func:`identify` answers: the adapter that claims a request and what it asks for.
Identified = tuple[Adapter, FileRequest] | None


def identify(path: str, user_agent: str) -> Identified:
    """The adapter that claims a phone's request, and what the request asks for.

    Not cached here: see :class:`IdentifyCache` for why and where.
    """
    for adapter in ADAPTERS.values():
        request = adapter.identify(path, user_agent)
        if request is not None:
            return adapter, request
    return None


class Miss(Enum):
    """:meth:`IdentifyCache.get` found nothing (None is a cached answer: no adapter claims it)."""

    MISS = auto()


MISS: Final = Miss.MISS


class IdentifyCache(BytesBounded[tuple[str, str], Identified]):
    """:func:`identify` answers for requests that passed authentication, bounded in bytes
    (:class:`provisioner.bounded.BytesBounded`).

    A boot storm repeats the same few requests per device, and adapters are pure, so answers
    are worth keeping; but the key is what a client sends (path and User-Agent). The caller
    therefore looks up first, identifies uncached on a miss, and stores the answer
    (:meth:`put`) only once the request authenticated: an unauthenticated client cannot add a
    byte. Past the bound the oldest entries go first; an evicted entry that is still in use
    comes back on its device's next fetch.
    """

    ENTRY_BYTES = 640
    """One entry beside its key's characters, rounded up from tracemalloc (~600 bytes): the dict
    slot, the key tuple and its two string headers, the :class:`FileRequest`."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        """``max_bytes``: 32 MiB holds about 50,000 entries, the three files of each of
        ~16,000 devices (the User-Agent names the MAC, so even shared files key per device)."""
        super().__init__(max_bytes)

    def get(self, path: str, user_agent: str) -> Identified | Miss:
        return self._entries.get((path, user_agent), MISS)

    def put(self, path: str, user_agent: str, identified: Identified) -> None:
        self._put((path, user_agent), identified, replace=False)


def served(vendor: str, model_name: str | None) -> tuple[Adapter, ModelInfo] | None:
    """The adapter of ``vendor`` and what a device of ``model_name`` is served as (the table's
    model or the family's generic one); None for an unknown vendor or model, or no model."""
    adapter = ADAPTERS.get(vendor)
    model = adapter.served_model(model_name) if adapter is not None and model_name else None
    return None if adapter is None or model is None else (adapter, model)


def pin_limit_conflicts(shortest: int, longest: int) -> list[str]:
    """Every model key that cannot hold each PIN of ``shortest``..``longest`` digits, described.

    The PIN policy must fit every key that carries the PIN (DESIGN, "PIN on devices"): a PIN the
    policy admits but a device cannot take would make that device unrenderable.
    """
    conflicts = []
    for adapter in ADAPTERS.values():
        for model in adapter.models.values():
            key = adapter.pin_key(model)
            if key is not None and not key.min_digits <= shortest <= longest <= key.max_digits:
                conflicts.append(
                    f"{adapter.vendor} {model.name}: {key.name} takes {key.min_digits} to "
                    f"{key.max_digits} digits"
                )
    return conflicts
