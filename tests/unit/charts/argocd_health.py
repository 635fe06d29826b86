"""Argo CD's health check for kubetune resources, run as Argo CD runs it: the chart's Lua script in
Lua 5.1 (Argo CD embeds gopher-lua, a Lua 5.1), with `obj` the resource and only the libraries
health scripts may use."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "charts" / "kubetune" / "argocd" / "health.lua"


@cache
def _runner():
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    run = lua.eval(
        """function(code, obj)
             local chunk = assert(loadstring(code, "health.lua"))
             setfenv(chunk, {obj = obj, ipairs = ipairs, pairs = pairs, tostring = tostring, tonumber = tonumber,
                             type = type, string = string, table = table, math = math})
             return chunk()
           end"""
    )
    return lua, run


def health(resource: dict[str, Any]) -> dict[str, str]:
    """The `{status, message}` Argo CD shows for `resource` (a whole object, as the API server returns it)."""
    lua, run = _runner()
    result = run(SCRIPT.read_text(encoding="utf-8"), lua.table_from(resource, recursive=True))
    return {"status": result["status"], "message": result["message"]}
