"""Every piece of application state, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.phoneauth import Phones
from provisioner.push import PushWorker
from provisioner.settings import Settings

if TYPE_CHECKING:  # pysaml2 takes seconds to import: loaded only when SAML is configured
    from provisioner.saml_sp import ServiceProvider

SETTINGS = web.AppKey("settings", Settings)
CORE = web.AppKey("core", Core)
PHONES = web.AppKey("phones", Phones)
PUSH_WORKER = web.AppKey("push_worker", PushWorker)  # in processes that run one
SAML: web.AppKey[ServiceProvider] = web.AppKey("saml")  # when single sign-on is configured

# Per-request state.
ACTOR = "provisioner.actor"
TOKEN = "provisioner.token"  # noqa: S105 (a key name, not a secret)
REQUEST_ID = "provisioner.request_id"

__all__ = [
    "ACTOR",
    "CORE",
    "PHONES",
    "PUSH_WORKER",
    "REQUEST_ID",
    "SAML",
    "SETTINGS",
    "TOKEN",
    "Actor",
]
