"""The JSON API's device, site and push-job routes (mounted under ``/api/v1``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from provisioner import devices_service, discovery, sites
from provisioner.audit import Actor
from provisioner.users import iso_or_none
from provisioner.web.inputs import query_int, read_body
from provisioner.web.keys import ACTOR, CORE

routes = web.RouteTableDef()


def _actor(request: web.Request) -> Actor:
    actor: Actor = request[ACTOR]
    return actor


def assignment_view(row: Any) -> dict[str, Any]:
    return {
        "slot": row["slot"],
        "username": row["username"],
        "display_name": row["display_name"],
        "extension": row["extension"],
        "ipui": row["ipui"],
        "sip_user": row["sip_user"],
        "user_disabled": row["user_disabled"],
    }


def device_view(
    row: Any, assignments: list[Any] | None = None, access_code: str | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "mac": row["mac"],
        "vendor": row["vendor"],
        "model": row["model"],
        "kind": row["kind"],
        "label": row["label"],
        "site": row["site"],
        "revision": row["revision"],
        "fetched_revision": row["fetched_revision"],
        "rendered_at": iso_or_none(row["rendered_at"]),
        "render_error": row["render_error"],
        "bootstrap_allowed": row["bootstrap_allowed"],
        "last_fetch": None
        if row["last_fetch_at"] is None
        else {
            "at": iso_or_none(row["last_fetch_at"]),
            "revision": row["last_fetch_revision"],
            "file": row["last_fetch_file"],
            "source": row["last_fetch_source"],
        },
        "created_at": iso_or_none(row["created_at"]),
    }
    if "job_state" in row:
        view["push_state"] = row["job_state"]
    if assignments is not None:
        view["assignments"] = [assignment_view(a) for a in assignments]
    if access_code is not None:
        view["access_code"] = access_code
    return view


def model_view(row: Any) -> dict[str, Any]:
    """``model_known`` and, for a model served generically, the warning (device views)."""
    warning = devices_service.model_warning(row)
    return {"model_known": warning is None, **({"warning": warning} if warning else {})}


def details_view(details: devices_service.DeviceDetails) -> dict[str, Any]:
    return {
        **device_view(details.device, details.assignments, details.access_code),
        **model_view(details.device),
    }


def job_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "device": row["mac"],
        "state": row["state"],
        "reason": row["reason"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": iso_or_none(row["created_at"]),
        "updated_at": iso_or_none(row["updated_at"]),
    }


@routes.get("/devices")
async def list_devices(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10_000_000)
    rows, total = await devices_service.list_devices(
        request.config_dict[CORE],
        _actor(request),
        search=request.query.get("search") or None,
        limit=limit,
        offset=offset,
    )
    return web.json_response(
        {
            "devices": [device_view(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


def discovered_view(row: Any) -> dict[str, Any]:
    return {
        "mac": row["mac"],
        "vendor": row["vendor"],
        "model": row["model"],
        "firmware": row["firmware"],
        "source": row["source"],
        "site": row["site"],
        "first_seen": iso_or_none(row["first_seen"]),
        "last_seen": iso_or_none(row["last_seen"]),
    }


# Before /devices/{mac}, which would take "discovered" for a MAC.
@routes.get("/devices/discovered")
async def list_discovered(request: web.Request) -> web.Response:
    rows = await discovery.list_discovered(request.config_dict[CORE], _actor(request))
    return web.json_response({"devices": [discovered_view(r) for r in rows]})


@routes.post("/devices")
async def create_device(request: web.Request) -> web.Response:
    new = devices_service.NewDevice(**await read_body(request, "DeviceCreate"))
    core = request.config_dict[CORE]
    row = await devices_service.create_device(core, _actor(request), new)
    details = await devices_service.find_device(core, _actor(request), row["mac"])
    return web.json_response(details_view(details), status=201)


@routes.get("/devices/{mac}")
async def get_device(request: web.Request) -> web.Response:
    details = await devices_service.find_device(
        request.config_dict[CORE], _actor(request), request.match_info["mac"]
    )
    return web.json_response(details_view(details))


@routes.patch("/devices/{mac}")
async def update_device(request: web.Request) -> web.Response:
    changes = await read_body(request, "DeviceUpdate")
    core = request.config_dict[CORE]
    row = await devices_service.update_device(
        core, _actor(request), request.match_info["mac"], changes
    )
    details = await devices_service.find_device(core, _actor(request), row["mac"])
    return web.json_response(details_view(details))


@routes.delete("/devices/{mac}")
async def delete_device(request: web.Request) -> web.Response:
    await devices_service.delete_device(
        request.config_dict[CORE], _actor(request), request.match_info["mac"]
    )
    return web.Response(status=204)


@routes.put("/devices/{mac}/assignments")
async def set_assignments(request: web.Request) -> web.Response:
    items = await read_body(request, "AssignmentsBody")
    assignments = [devices_service.Assignment(**item) for item in items]
    rows = await devices_service.set_assignments(
        request.config_dict[CORE], _actor(request), request.match_info["mac"], assignments
    )
    return web.json_response([assignment_view(r) for r in rows])


@routes.put("/devices/{mac}/api-access")
async def set_api_access(request: web.Request) -> web.Response:
    access = devices_service.ApiAccessInput(**await read_body(request, "ApiAccess"))
    await devices_service.set_api_access(
        request.config_dict[CORE], _actor(request), request.match_info["mac"], access
    )
    return web.Response(status=204)


@routes.post("/devices/{mac}/access-code")
async def set_access_code(request: web.Request) -> web.Response:
    body = await read_body(request, "AccessCodeUpdate") if request.body_exists else {}
    code = body.get("access_code")
    code, jobs = await devices_service.set_access_code(
        request.config_dict[CORE], _actor(request), request.match_info["mac"], code
    )
    return web.json_response({"access_code": code, "push_jobs": jobs})


@routes.post("/devices/{mac}/reprovision")
async def reprovision_device(request: web.Request) -> web.Response:
    body = await read_body(request, "ReprovisionRequest") if request.body_exists else {}
    rotate_sip = body.get("rotate_sip", False)
    jobs = await devices_service.reprovision_device(
        request.config_dict[CORE], _actor(request), request.match_info["mac"], rotate_sip=rotate_sip
    )
    return web.json_response({"jobs": jobs}, status=202)


@routes.post("/users/{username}/reprovision")
async def reprovision_user(request: web.Request) -> web.Response:
    jobs = await devices_service.reprovision_user(
        request.config_dict[CORE], _actor(request), request.match_info["username"]
    )
    return web.json_response({"jobs": jobs}, status=202)


@routes.get("/push-jobs")
async def list_push_jobs(request: web.Request) -> web.Response:
    rows = await devices_service.list_push_jobs(
        request.config_dict[CORE],
        _actor(request),
        state=request.query.get("state"),
        device=request.query.get("device") or None,
        limit=query_int(request, "limit", 100, 1, 1000),
    )
    return web.json_response({"jobs": [job_view(r) for r in rows]})


@routes.get("/models")
async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": devices_service.list_models(_actor(request))})


@routes.get("/sites")
async def list_sites(request: web.Request) -> web.Response:
    rows = await sites.list_sites(request.config_dict[CORE], _actor(request))
    return web.json_response({"sites": [sites.site_view(r) for r in rows]})


@routes.put("/sites/{name}")
async def put_site(request: web.Request) -> web.Response:
    changes = await read_body(request, "SiteUpdate")
    row = await sites.set_site(
        request.config_dict[CORE], _actor(request), request.match_info["name"], changes
    )
    return web.json_response(sites.site_view(row))
