"""Attribute mappings: which attribute of a directory entry or an assertion fills which user
field, written ``field=attribute,...`` (``username=uid,display_name=displayName``)."""

from __future__ import annotations

#: The user fields a directory or an identity provider may fill.
FIELDS = ("username", "display_name", "email", "extension")


def parse_attribute_map(text: str, *, variable: str) -> dict[str, str]:
    """``{field: attribute}`` from ``text``; a malformed mapping raises :class:`SettingsError`
    naming ``variable``. Every field at most once, ``username`` always."""
    # Imported here: settings.py parses its mappings with this function.
    from provisioner.settings import SettingsError

    mapping: dict[str, str] = {}
    for item in text.split(","):
        field, sep, attribute = (part.strip() for part in item.partition("="))
        if not sep or not field or not attribute or any(c.isspace() for c in attribute):
            raise SettingsError(f"{variable}: expected field=attribute,..., got {item.strip()!r}")
        if field not in FIELDS:
            raise SettingsError(f"{variable}: {field!r} is not one of {', '.join(FIELDS)}")
        if field in mapping:
            raise SettingsError(f"{variable}: {field} is mapped twice")
        mapping[field] = attribute
    if "username" not in mapping:
        raise SettingsError(f"{variable}: the mapping must name the username's attribute")
    return mapping
