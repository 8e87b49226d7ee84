"""Which attribute of a directory entry (LDAP) or an assertion (SAML) fills which user field.

Written ``field=attribute,...`` (``PROVISIONER_LDAP_ATTRIBUTES``, and SAML's mapping the same
way), e.g. ``username=uid,display_name=cn,email=mail,extension=telephoneNumber``. Fields are
the user's own names; attributes are whatever the directory calls them (``sAMAccountName``,
``urn:oid:0.9.2342.19200300.100.1.1``): anything but a comma or a blank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The user fields a directory or an identity provider may fill.
MAPPABLE_FIELDS = ("username", "display_name", "email", "extension")

Values = Sequence[str] | Sequence[bytes] | str | bytes


@dataclass(frozen=True)
class AttributeMap:
    """``field → attribute`` pairs in the order they were written."""

    pairs: tuple[tuple[str, str], ...]

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.pairs)

    @property
    def attributes(self) -> list[str]:
        """Every attribute to ask for, each once."""
        return list(dict.fromkeys(attribute for _, attribute in self.pairs))

    def attribute(self, name: str) -> str | None:
        return next((attribute for field, attribute in self.pairs if field == name), None)

    def __str__(self) -> str:
        return ",".join(f"{field}={attribute}" for field, attribute in self.pairs)

    def apply(self, entry: Mapping[str, Values]) -> dict[str, str | None]:
        """The mapped fields of ``entry`` (attribute → values; bytes are UTF-8): each field's
        first value, stripped; None where the entry lacks the attribute or it is empty.
        Attribute names match exactly or else case-insensitively (LDAP's are case-insensitive)."""
        folded = {name.lower(): values for name, values in entry.items()}
        mapped: dict[str, str | None] = {}
        for name, attribute in self.pairs:
            values = entry.get(attribute, folded.get(attribute.lower()))
            mapped[name] = _first_text(values)
        return mapped


def _first_text(values: Values | None) -> str | None:
    if values is None:
        return None
    listed: Sequence[str | bytes] = [values] if isinstance(values, str | bytes) else values
    for value in listed:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text.strip():
            return text.strip()
    return None


def parse_attribute_map(text: str, *, required: Sequence[str] = ("username",)) -> AttributeMap:
    """Parse ``field=attribute,...``; ValueError with a sentence saying what is wrong (the
    caller adds the variable's name). Every field of ``required`` must be mapped."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, attribute = (part.strip() for part in item.partition("="))
        if not sep or not name or not attribute:
            raise ValueError(f"expected field=attribute, got {item.strip()!r}")
        if name not in MAPPABLE_FIELDS:
            raise ValueError(f"unknown field {name!r} (fields: {', '.join(MAPPABLE_FIELDS)})")
        if any(name == seen for seen, _ in pairs):
            raise ValueError(f"field {name!r} is mapped twice")
        if any(c.isspace() for c in attribute):
            raise ValueError(f"attribute {attribute!r} contains a blank")
        pairs.append((name, attribute))
    missing = [name for name in required if all(name != seen for seen, _ in pairs)]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be mapped")
    return AttributeMap(tuple(pairs))
