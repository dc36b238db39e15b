"""ConfigMap volumes of the local runtime, and the fault flags they carry, changed at run time at /_local/flags.

A Knative Service that mounts a ConfigMap from knative/config/ (the fault flags, `shop-flags`) gets the
ConfigMap's keys as files in `<data>/configmaps/<name>/`, written afresh at each start (so every flag
starts off), and each environment variable pointing into the mount path points there instead.

    GET /_local/flags              every flag: its key, what it does, its variants and the one in force
    PUT /_local/flags/{key}        {"variant": "on"}: that variant from now on (the functions read the
                                   file again within half a second: no restart)
    POST /_local/flags/reset       every flag back to the ConfigMap's variant (off)

Open like every /_local endpoint: the runtime listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from functions.shared.flags import FLAGS
from local import manifests
from local.serving import problem

PATH = "/_local/flags"
FLAGS_CONFIG_MAP = "shop-flags"
FLAGS_KEY = "flags.json"


class ConfigMapVolumes:
    """The ConfigMaps under knative/config/, as the files a mounted volume would show."""

    def __init__(self, folder: Path, config_dir: Path = manifests.KNATIVE_DIR / "config") -> None:
        self.folder = folder
        self.data: dict[str, Mapping[str, str]] = {
            document["metadata"]["name"]: document.get("data") or {}
            for document in manifests.resources("ConfigMap", (config_dir,))
        }

    def write(self) -> None:
        for name, data in self.data.items():
            for key, value in data.items():
                _write_atomically(self.path(name) / key, value)

    def path(self, name: str) -> Path:
        return self.folder / name

    def env(self, env: Mapping[str, str], mounts: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """The environment with every value under a mounted ConfigMap's path moved to its local folder."""
        result = dict(env)
        for config_map, mount in mounts:
            if config_map not in self.data:
                raise KeyError(f"no ConfigMap {config_map!r} under knative/config/ to mount at {mount}")
            for name, value in env.items():
                if value == mount or value.startswith(mount + "/"):
                    result[name] = str(self.path(config_map)) + value[len(mount) :]
        return result

    @property
    def flags_file(self) -> Path:
        return self.path(FLAGS_CONFIG_MAP) / FLAGS_KEY

    # --- the fault flags ---------------------------------------------------------------------

    def flags(self) -> dict[str, Any]:
        return dict(json.loads(self.flags_file.read_text()))

    def defaults(self) -> dict[str, Any]:
        return dict(json.loads(self.data[FLAGS_CONFIG_MAP][FLAGS_KEY]))

    def set_variant(self, key: str, variant: str) -> dict[str, Any]:
        document = self.flags()
        document["flags"][key]["defaultVariant"] = variant
        _write_atomically(self.flags_file, json.dumps(document, indent=2) + "\n")
        return document

    def reset(self) -> None:
        _write_atomically(self.flags_file, self.data[FLAGS_CONFIG_MAP][FLAGS_KEY])

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PATH, self._list),
            web.post(f"{PATH}/reset", self._reset),
            web.put(PATH + "/{key}", self._put),
        ]

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response({"file": str(self.flags_file), "flags": _listing(self.flags())})

    async def _reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"file": str(self.flags_file), "flags": _listing(self.flags())})

    async def _put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        document = self.flags()
        flag = document["flags"].get(key)
        if flag is None:
            return problem(404, "Unknown flag", f"no fault flag {key!r}; there are {sorted(document['flags'])}")
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "Invalid request", 'send a JSON body: {"variant": "<name>"}')
        variant = body.get("variant") if isinstance(body, dict) else None
        if not isinstance(variant, str) or variant not in flag["variants"]:
            detail = f"variant must be one of {sorted(flag['variants'])}, got {variant!r}"
            return problem(400, "Invalid request", detail)
        updated = self.set_variant(key, variant)
        return web.json_response(next(f for f in _listing(updated) if f["key"] == key))


def _listing(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "key": key,
            "description": FLAGS.get(key, ""),
            "variants": flag["variants"],
            "variant": flag["defaultVariant"],
            "on": flag["defaultVariant"] != "off",
        }
        for key, flag in document["flags"].items()
    ]


def _write_atomically(path: Path, text: str) -> None:
    """Write, then rename: a reader (the flagd provider) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
