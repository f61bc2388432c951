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
class Instance:
    """A compute instance as labvmd shows it."""

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
