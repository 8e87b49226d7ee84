"""German and English texts for the web pages: lookup, language choice, error messages.

``t(lang, key, **params)`` looks ``key`` up in :data:`~provisioner.web.i18n_catalog.CATALOG`. A key
missing from the catalog renders as ``⟦key⟧`` (:data:`MISSING_MARK`), never as a plausible-looking
text, so a test that walks every page can find untranslated labels by that mark.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping
from typing import Any

from provisioner.errors import ProvisionerError
from provisioner.web.i18n_catalog import CATALOG, ERRORS

log = logging.getLogger(__name__)

LANGUAGES: tuple[str, ...] = ("de", "en")
DEFAULT_LANGUAGE = "de"
MISSING_MARK = "⟦"
_INDEX = {"en": 0, "de": 1}

Translate = Callable[..., str]


def t(lang: str, key: str, /, **params: Any) -> str:
    """The text for ``key`` in ``lang`` with ``{name}`` placeholders filled from ``params``."""
    texts = CATALOG.get(key)
    if texts is None:
        log.warning("untranslated key %r", key)
        return f"{MISSING_MARK}{key}⟧"
    return _fill(texts[_INDEX.get(lang, 0)], params)


def translator(lang: str) -> Translate:
    """``t`` bound to one language, as the templates call it: ``t("users.title")``."""

    def bound(key: str, /, **params: Any) -> str:
        return t(lang, key, **params)

    return bound


def _fill(text: str, params: Mapping[str, Any]) -> str:
    # format_map on a text from our own catalog; a placeholder without a value stays visible
    # rather than raising in the middle of a page.
    return string.Formatter().vformat(text, (), _Defaulting(params)) if params else text


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def error_text(lang: str, exc: ProvisionerError, /, **params: Any) -> str:
    """A translated sentence for ``exc``: by ``code.reason``, then ``code``, else its message.

    ``params`` fill placeholders some texts carry (policy limits); ``exc.retry_after`` is
    always offered as ``seconds``.
    """
    params = {"seconds": exc.retry_after, **params}
    for key in (f"{exc.code}.{exc.reason}" if exc.reason else None, exc.code):
        if key is not None and key in ERRORS:
            return _fill(ERRORS[key][_INDEX.get(lang, 0)], params)
    # The domain's own sentence is English and never carries a secret.
    return exc.message


def negotiate(chosen: str | None, user_language: str | None, accept_language: str) -> str:
    """The page language: the switch's cookie, else the user's language, else the browser's."""
    for candidate in (chosen, user_language):
        if candidate in LANGUAGES:
            return str(candidate)
    return from_accept_language(accept_language) or DEFAULT_LANGUAGE


def from_accept_language(header: str) -> str | None:
    """The supported language the browser ranks highest (RFC 9110 §12.5.4), or None."""
    best: tuple[float, int] | None = None
    choice = None
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and quality > 0:
            rank = (quality, -position)
            if best is None or rank > best:
                best, choice = rank, primary
    return choice
