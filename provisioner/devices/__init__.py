"""Per-vendor device adapters and their registry.

The registry is this explicit list: adding a vendor is one module, one template folder and one
line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

from provisioner.devices import gigaset, grandstream, mitel, poly, snom, yealink
from provisioner.devices.base import Adapter, FileRequest

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


@lru_cache(maxsize=65_536)
def identify(path: str, user_agent: str) -> tuple[Adapter, FileRequest] | None:
    """The adapter that claims a phone's request, and what the request asks for.

    Cached: a boot storm repeats the same few requests per device, and adapters are pure.
    """
    for adapter in ADAPTERS.values():
        request = adapter.identify(path, user_agent)
        if request is not None:
            return adapter, request
    return None
