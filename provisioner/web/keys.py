"""Every piece of application state, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.directory_sync import IntervalSync
from provisioner.phoneauth import Phones
from provisioner.push import PushWorker
from provisioner.settings import Settings
from provisioner.workerprocess import WorkerProcess

if TYPE_CHECKING:  # pysaml2 takes seconds to import: loaded only when SAML is configured
    from provisioner.saml_sp import ServiceProvider

SETTINGS = web.AppKey("settings", Settings)
CORE = web.AppKey("core", Core)
PHONES = web.AppKey("phones", Phones)
PUSH_WORKER = web.AppKey("push_worker", PushWorker)  # in processes that run one
WORKER_PROCESS = web.AppKey("worker_process", WorkerProcess)  # serve's child running one
DIRECTORY_SYNC = web.AppKey("directory_sync", IntervalSync)  # with a sync interval
SAML: web.AppKey[ServiceProvider] = web.AppKey("saml")  # when single sign-on is configured

# Per-request state.
ACTOR = web.RequestKey("actor", Actor)
TOKEN = web.RequestKey("token", str)
REQUEST_ID = web.RequestKey("request_id", str)

__all__ = [
    "ACTOR",
    "CORE",
    "DIRECTORY_SYNC",
    "PHONES",
    "PUSH_WORKER",
    "REQUEST_ID",
    "SAML",
    "SETTINGS",
    "TOKEN",
    "WORKER_PROCESS",
    "Actor",
]
