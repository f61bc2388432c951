"""What labvmd answers, as small read-only records.

Each record keeps the JSON it was read from in ``raw``, so fields the
daemon adds later are still reachable without a client upgrade.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

# Operation statuses (daemon/api/operation.go).
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

# Job states that will not change any more (daemon/api/states.go).
JOB_ENDED = frozenset({"Succeeded", "Failed", "Cancelled", "Lost"})


@dataclass(frozen=True)
class Stage:
    """One step of an operation.

    ``step`` is the stable name to branch on (``disk``, ``boot``, …);
    ``name`` and ``detail`` are for people and may change.
    """

    step: str
    name: str
    detail: str
    started_at: str
    done_at: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stage:
        return cls(
            step=d.get("step", ""),
            name=d.get("name", ""),
            detail=d.get("detail", ""),
            started_at=d.get("started_at", ""),
            done_at=d.get("done_at"),
        )


@dataclass(frozen=True)
class Operation:
    """A piece of asynchronous work: what every mutating call returns."""

    id: str
    kind: str
    target: str
    caller: str
    status: str
    stages: list[Stage]
    error: dict[str, Any] | None
    created_at: str
    done_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the operation finished, either way."""
        return self.status in (SUCCEEDED, FAILED, CANCELLED)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Operation:
        return cls(
            id=d.get("id", ""),
            kind=d.get("kind", ""),
            target=d.get("target", ""),
            caller=d.get("caller", ""),
            status=d.get("status", ""),
            stages=[Stage.from_json(s) for s in d.get("stages") or []],
            error=d.get("error"),
            created_at=d.get("created_at", ""),
            done_at=d.get("done_at"),
            raw=d,
        )


@dataclass(frozen=True)
class IdleShutdown:
    """An instance's idle shutdown and, while it runs, its idle clock.

    ``limit`` is the idle period after which labvmd stops the instance
    (``"30m"``, ``"2h"``), or None when the idle shutdown is off. The other
    fields are what the idle policy's latest look found while ``watched``.
    """

    limit: str | None
    limit_seconds: int
    watched: bool
    idle_seconds: int
    sessions_open: int
    last_session_at: str | None
    jobs: int
    cpu_percent: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        """Whether an idle shutdown is set."""
        return self.limit is not None

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> IdleShutdown:
        d = d or {}
        return cls(
            limit=d.get("limit") or None,
            limit_seconds=int(d.get("limit_seconds") or 0),
            watched=bool(d.get("watched")),
            idle_seconds=int(d.get("idle_seconds") or 0),
            sessions_open=int(d.get("sessions_open") or 0),
            last_session_at=d.get("last_session_at"),
            jobs=int(d.get("jobs") or 0),
            cpu_percent=d.get("cpu_percent"),
            raw=d,
        )


@dataclass(frozen=True)
class ScheduleRun:
    """A time a schedule comes (``next``) or came (``last``) due.

    ``action`` is ``"start"`` or ``"stop"``; ``at`` the scheduled time.
    For a past run, ``operation`` is what it began, or ``skipped`` says why
    it did nothing; ``missed`` means labvmd was down then and applied it
    when it came back.
    """

    action: str
    at: str
    ran_at: str | None
    operation: str
    skipped: str
    missed: bool

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> ScheduleRun | None:
        if not d:
            return None
        return cls(
            action=d.get("action", ""),
            at=d.get("at", ""),
            ran_at=d.get("ran_at"),
            operation=d.get("operation", ""),
            skipped=d.get("skipped", ""),
            missed=bool(d.get("missed")),
        )


@dataclass(frozen=True)
class Schedule:
    """Cron times, in a time zone, at which labvmd stops and starts an instance."""

    id: int
    instance: str
    stop: str | None
    start: str | None
    timezone: str
    created_by: str
    created_at: str
    next: ScheduleRun | None
    last: ScheduleRun | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Schedule:
        return cls(
            id=int(d.get("id", 0)),
            instance=d.get("instance", ""),
            stop=d.get("stop") or None,
            start=d.get("start") or None,
            timezone=d.get("timezone", ""),
            created_by=d.get("created_by", ""),
            created_at=d.get("created_at", ""),
            next=ScheduleRun.from_json(d.get("next")),
            last=ScheduleRun.from_json(d.get("last")),
            raw=d,
        )


@dataclass(frozen=True)
class Dataset:
    """A host directory, declared by an owner, that instances created with
    it see read-only at ``/datasets/NAME``."""

    name: str
    path: str
    created_by: str
    created_at: str
    used_by: list[str]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Dataset:
        return cls(
            name=d.get("name", ""),
            path=d.get("path", ""),
            created_by=d.get("created_by", ""),
            created_at=d.get("created_at", ""),
            used_by=list(d.get("used_by") or []),
            raw=d,
        )


@dataclass(frozen=True)
class Instance:
    """A compute instance as labvmd shows it.

    ``schedules`` is filled only by ``instances.get`` (labvmd leaves it out
    of lists); ``datasets`` are the ones the guest sees at ``/datasets/NAME``.
    """

    name: str
    state: str
    state_reason: str
    size: str
    image: str
    ip: str
    owner: str
    creator: str
    assigned_to: str
    ssh_enabled: bool
    idle_shutdown: IdleShutdown
    datasets: list[str]
    schedules: list[Schedule]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Instance:
        size = d.get("size") or {}
        return cls(
            name=d.get("name", ""),
            state=d.get("state", ""),
            state_reason=d.get("state_reason", ""),
            size=size.get("name", "") if isinstance(size, dict) else str(size),
            image=d.get("image", ""),
            ip=d.get("ip", ""),
            owner=d.get("owner", ""),
            creator=d.get("creator", ""),
            assigned_to=d.get("assigned_to", ""),
            ssh_enabled=bool(d.get("ssh_enabled")),
            idle_shutdown=IdleShutdown.from_json(d.get("idle_shutdown")),
            datasets=list(d.get("datasets") or []),
            schedules=[Schedule.from_json(x) for x in d.get("schedules") or []],
            raw=d,
        )


@dataclass(frozen=True)
class Job:
    """A command run in an instance's guest."""

    id: int
    instance: str
    command: list[str]
    state: str
    reason: str
    exit_code: int | None
    signal: int
    submitter: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job ended (Succeeded, Failed, Cancelled or Lost)."""
        return self.state in JOB_ENDED

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        return cls(
            id=int(d.get("id", 0)),
            instance=d.get("instance", ""),
            command=list(d.get("command") or []),
            state=d.get("state", ""),
            reason=d.get("reason", ""),
            exit_code=d.get("exit_code"),
            signal=int(d.get("signal") or 0),
            submitter=d.get("submitter", ""),
            raw=d,
        )


@dataclass(frozen=True)
class JobLogs:
    """A job's output: the last MiB of each stream, as bytes."""

    job: Job
    stdout: bytes
    stderr: bytes
    truncated: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobLogs:
        return cls(
            job=Job.from_json(d.get("job") or {}),
            stdout=base64.b64decode(d.get("stdout") or ""),
            stderr=base64.b64decode(d.get("stderr") or ""),
            truncated=bool(d.get("truncated")),
        )
