"""A stateful stand-in for labvmd's datasets, idle shutdown and schedules.

It answers the routes of docs/API.md the way labvmd does: the same
statuses, error codes and bodies, the same checks on input (names, paths,
idle shutdown bounds, cron fields, IANA zones, schedule and dataset
limits), and nothing changed when a check fails. It is installed on a
:class:`fakeserver.FakeDaemon`; tests read and seed its state directly.
"""

from __future__ import annotations

import json
import os
import re
import zoneinfo
from typing import Any

from fakeserver import FakeDaemon, Request

NAME = r"(?P<name>[^/?]+)"
MAX_SCHEDULES = 16  # daemon/policy/schedule.go maxSchedulesPerInstance
MAX_DATASETS = 8
MIN_IDLE, MAX_IDLE = 15 * 60, 72 * 3600  # vm.MinIdleShutdown, vm.MaxIdleShutdown
NOW = "2026-11-29T19:00:00Z"

_NAME_RULE = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$")
_CRON_SHORTHANDS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def err(status: int, code: str, message: str, hint: str = "") -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message, "hint": hint}}


def listing(items: list[Any]) -> bytes:
    """A JSON array as labvmd sends it (a list body would be NDJSON to the fake)."""
    return json.dumps(items).encode()


def parse_idle(text: str) -> int | None:
    """Seconds as vm.ParseIdleShutdown reads them (0 is off); None if not a duration."""
    t = text.strip().lower()
    if t in ("off", "0", "none"):
        return 0
    m = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", t)
    if not t or not m:
        return None
    d, h, mi, s = (int(x or 0) for x in m.groups())
    secs = d * 86400 + h * 3600 + mi * 60 + s
    return secs or None


def format_idle(secs: int) -> str:
    out = ""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= n:
            out += f"{secs // n}{unit}"
            secs %= n
    return out


def cron_ok(expr: str) -> bool:
    expr = expr.strip()
    if expr in _CRON_SHORTHANDS or re.fullmatch(r"@every \S+", expr):
        return True
    fields = expr.split()
    return len(fields) == 5 and all(re.fullmatch(r"[0-9*,/\-A-Za-z]+", f) for f in fields)


class FakePolicy:
    """labvmd's instances (just enough of them), datasets and schedules."""

    def __init__(self, fake: FakeDaemon, caller: str = "alice") -> None:
        self.caller = caller
        self.instances: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.schedules: list[dict[str, Any]] = []
        self._next_schedule = 1
        inst = rf"/v1/instances/{NAME}"
        fake.pattern("GET", r"/v1/datasets", self.list_datasets)
        fake.pattern("POST", r"/v1/datasets", self.add_dataset)
        fake.pattern("DELETE", rf"/v1/datasets/{NAME}", self.remove_dataset)
        fake.pattern("POST", r"/v1/instances", self.create)
        fake.pattern("GET", inst, self.get)
        fake.pattern("PUT", inst + "/idle-shutdown", self.set_idle)
        fake.pattern("GET", inst + "/schedules", self.instance_schedules)
        fake.pattern("POST", inst + "/schedules", self.add_schedule)
        fake.pattern("DELETE", inst + r"/schedules/(?P<id>[^/]+)", self.remove_schedule)
        fake.pattern("GET", r"/v1/schedules", self.all_schedules)

    # -- instances ------------------------------------------------------------

    def add_instance(self, name: str, idle: int = 0, datasets: list[str] | None = None) -> None:
        self.instances[name] = {"name": name, "state": "Running", "idle": idle, "datasets": list(datasets or [])}

    def _wire(self, rec: dict[str, Any], with_schedules: bool) -> dict[str, Any]:
        # watched stays false: labvmd sets it at the idle policy's first
        # look, which this fake never takes.
        idle: dict[str, Any] = {"limit_seconds": rec["idle"], "watched": False,
                                "idle_seconds": 0, "sessions_open": 0, "jobs": 0}
        if rec["idle"]:
            idle["limit"] = format_idle(rec["idle"])
        out: dict[str, Any] = {"name": rec["name"], "state": rec["state"], "size": {"name": "Standard_B1s"},
                               "owner": self.caller, "idle_shutdown": idle}
        if rec["datasets"]:
            out["datasets"] = rec["datasets"]
        if with_schedules:
            scheds = [s for s in self.schedules if s["instance"] == rec["name"]]
            if scheds:
                out["schedules"] = scheds
        return out

    def _instance(self, req: Request) -> dict[str, Any] | tuple[int, Any]:
        rec = self.instances.get(req.params["name"])
        if rec is None:
            return err(404, "NotFound", f"instance {req.params['name']!r} not found", "`labvm list` shows the instances")
        return rec

    def _idle(self, text: str) -> int | tuple[int, Any]:
        hint = "idle shutdown: use a duration such as 30m, 2h or 1d, or off"
        secs = parse_idle(text)
        if secs is None:
            return err(400, "InvalidArgument", f"invalid idle shutdown {text!r}: use a duration such as 30m, 2h or 1d, or off", hint)
        if secs and not MIN_IDLE <= secs <= MAX_IDLE:
            return err(400, "InvalidArgument",
                       f"invalid idle shutdown {format_idle(secs)}: it must be at least 15m and at most 3d", hint)
        return secs

    def create(self, req: Request) -> tuple[int, Any]:
        body = req.json()
        name = body.get("name", "")
        if name in self.instances:
            return err(409, "AlreadyExists", f"instance {name!r} already exists")
        names = body.get("datasets") or []
        if len(names) > MAX_DATASETS:
            return err(400, "InvalidArgument", f"{len(names)} datasets: at most {MAX_DATASETS}")
        for i, d in enumerate(names):
            if d not in self.datasets:
                return err(400, "InvalidArgument", f"unknown dataset {d!r}", "`labvm dataset list` shows the datasets")
            if d in names[:i]:
                return err(400, "InvalidArgument", f"dataset {d!r} given twice")
        idle = 0
        if body.get("idle_shutdown"):
            idle = self._idle(body["idle_shutdown"])
            if isinstance(idle, tuple):
                return idle
        self.add_instance(name, idle, names)
        return 202, {"id": "op-create", "kind": "create", "target": name, "caller": self.caller,
                     "status": "running", "stages": [], "created_at": NOW}

    def get(self, req: Request) -> tuple[int, Any]:
        rec = self._instance(req)
        return rec if isinstance(rec, tuple) else (200, self._wire(rec, True))

    def set_idle(self, req: Request) -> tuple[int, Any]:
        rec = self._instance(req)
        if isinstance(rec, tuple):
            return rec
        text = req.json().get("idle_shutdown", "")
        if not text:
            return err(400, "InvalidArgument", "idle shutdown: no value given")
        secs = self._idle(text)
        if isinstance(secs, tuple):
            return secs
        rec["idle"] = secs
        return 200, self._wire(rec, False)

    # -- datasets -------------------------------------------------------------

    def _dataset_wire(self, d: dict[str, Any]) -> dict[str, Any]:
        users = sorted(n for n, r in self.instances.items() if d["name"] in r["datasets"])
        return {**d, "used_by": users}

    def list_datasets(self, req: Request) -> tuple[int, Any]:
        return 200, listing([self._dataset_wire(self.datasets[n]) for n in sorted(self.datasets)])

    def add_dataset(self, req: Request) -> tuple[int, Any]:
        body = req.json()
        name, path = body.get("name", ""), body.get("path", "")
        if not _NAME_RULE.match(name) or name.endswith("-"):
            return err(400, "InvalidArgument", f"invalid dataset name {name!r}",
                       "use 3-24 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'")
        hint = f"give an absolute path to an existing directory on labvmd's host, e.g. /srv/datasets/{name}"
        if not os.path.isabs(path):
            return err(400, "InvalidArgument", f"path {path!r}: want an absolute path", hint)
        if not os.path.isdir(path):
            return err(400, "InvalidArgument", f"path {path!r}: not an existing directory", hint)
        if name in self.datasets:
            return err(409, "AlreadyExists", f"dataset {name!r} already exists",
                       "`labvm dataset list` shows the datasets; pick another name or remove that one first")
        self.datasets[name] = {"name": name, "path": os.path.normpath(path), "created_by": self.caller, "created_at": NOW}
        return 200, self._dataset_wire(self.datasets[name])

    def remove_dataset(self, req: Request) -> tuple[int, Any]:
        name = req.params["name"]
        if name not in self.datasets:
            return err(404, "NotFound", f"dataset {name!r} not found", "`labvm dataset list` shows the datasets")
        users = self._dataset_wire(self.datasets[name])["used_by"]
        if users:
            return err(409, "Conflict", f"dataset {name!r} is used by {', '.join(users)}",
                       "delete those instances first; a dataset is fixed at create")
        del self.datasets[name]
        return 200, {"removed": name}

    # -- schedules ------------------------------------------------------------

    def instance_schedules(self, req: Request) -> tuple[int, Any]:
        rec = self._instance(req)
        if isinstance(rec, tuple):
            return rec
        return 200, listing([s for s in self.schedules if s["instance"] == rec["name"]])

    def all_schedules(self, req: Request) -> tuple[int, Any]:
        return 200, listing(self.schedules)

    def add_schedule(self, req: Request) -> tuple[int, Any]:
        rec = self._instance(req)
        if isinstance(rec, tuple):
            return rec
        body = req.json()
        stop, start, tz = (str(body.get(k) or "").strip() for k in ("stop", "start", "timezone"))
        cron_hint = ('use five cron fields "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK", '
                     'e.g. "0 19 * * 1-5" for 19:00 on weekdays, or @daily, @hourly')
        if not stop and not start:
            return err(400, "InvalidArgument", "a schedule needs --stop, --start or both", cron_hint)
        if not tz:
            return err(400, "InvalidArgument", "--timezone is required", "e.g. --timezone Europe/Lisbon, or --timezone UTC")
        for what, expr in (("stop", stop), ("start", start)):
            if expr and not cron_ok(expr):
                return err(400, "InvalidArgument", f"{what} {expr!r}: not a cron expression", cron_hint)
        try:
            if tz.lower() == "local":
                raise zoneinfo.ZoneInfoNotFoundError(tz)
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return err(400, "InvalidArgument", f"unknown time zone {tz!r} (from the host's zoneinfo)")
        if sum(s["instance"] == rec["name"] for s in self.schedules) >= MAX_SCHEDULES:
            return err(409, "Conflict", f"{rec['name']} already has {MAX_SCHEDULES} schedules, the most an instance may have",
                       f"remove one with `labvm schedule remove {rec['name']} ID`")
        sc: dict[str, Any] = {"id": self._next_schedule, "instance": rec["name"], "timezone": tz,
                              "created_by": self.caller, "created_at": NOW,
                              "next": {"action": "stop" if stop else "start", "at": "2026-11-30T19:00:00Z"}}
        if stop:
            sc["stop"] = stop
        if start:
            sc["start"] = start
        self._next_schedule += 1
        self.schedules.append(sc)
        return 201, sc

    def remove_schedule(self, req: Request) -> tuple[int, Any]:
        rec = self._instance(req)
        if isinstance(rec, tuple):
            return rec
        raw = req.params["id"]
        if not raw.isdigit() or int(raw) < 1:
            return err(400, "InvalidArgument", f"schedule id {raw!r}: want a number from `labvm schedule list {rec['name']}`")
        for s in self.schedules:
            if s["id"] == int(raw) and s["instance"] == rec["name"]:
                self.schedules.remove(s)
                return 200, {"result": f"schedule {raw} of {rec['name']} removed"}
        return err(404, "NotFound", f"{rec['name']} has no schedule {raw}",
                   f"`labvm schedule list {rec['name']}` shows its schedules")
