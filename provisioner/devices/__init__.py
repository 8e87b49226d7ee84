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
