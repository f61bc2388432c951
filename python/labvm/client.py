"""The plain client: labvmd's HTTP/JSON API over its Unix socket.

labvmd knows the caller by the Unix user of the connecting process
(SO_PEERCRED), so there is nothing to log in with: whoever runs this code
is the caller.
"""

from __future__ import annotations

import http.client
import json
import os
import socket as _socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from .errors import Cancelled, Internal, InvalidArgument, LabvmError, PermissionDenied, Unavailable, error_from
from .models import CANCELLED, FAILED, Dataset, Instance, Job, JobLogs, Operation, Schedule

DEFAULT_SOCKET = "/run/labvm/labvm.sock"

# Ordinary calls answer at once (mutations return a 202 operation), so a
# generous bound only catches a daemon that hangs; streams have none.
DEFAULT_TIMEOUT = 120.0

_START_HINT = "start it with `sudo systemctl start labvmd` (or `sudo labvmd &`)"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose transport is a Unix stream socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("labvmd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _q(segment: str | int) -> str:
    """Escape one path segment."""
    return urllib.parse.quote(str(segment), safe="")


# An idle shutdown as callers give it: labvmd's own text ("30m", "2h",
# "1d", "off") or a timedelta.
IdleValue = str | timedelta

_IDLE_HINT = "give a duration such as '30m', '2h' or '1d' (or a datetime.timedelta), or 'off'"


def _idle_text(value: IdleValue) -> str:
    """The idle shutdown as labvmd reads it; labvmd checks the bounds."""
    if isinstance(value, timedelta):
        secs = int(value.total_seconds())
        if secs <= 0 or secs != value.total_seconds():
            raise InvalidArgument(f"idle shutdown {value!r}: want a positive whole number of seconds", _IDLE_HINT)
        out = ""
        for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if secs >= n:
                out += f"{secs // n}{unit}"
                secs %= n
        return out
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InvalidArgument(f"idle shutdown {value!r}: not a duration", _IDLE_HINT)


class Client:
    """A connection to labvmd.

    Args:
        socket: the daemon's socket; ``LABVM_SOCKET`` or
            ``/run/labvm/labvm.sock`` when not given.
        timeout: seconds an ordinary call may take; streams (waits) are
            not bounded by it.

    The resources hang off it: ``client.instances``, ``client.operations``,
    ``client.jobs``, ``client.datasets`` and ``client.schedules``.
    """

    def __init__(self, socket: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = socket or os.environ.get("LABVM_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self.instances = Instances(self)
        self.operations = Operations(self)
        self.jobs = Jobs(self)
        self.datasets = Datasets(self)
        self.schedules = Schedules(self)

    def __repr__(self) -> str:
        return f"labvm.Client(socket={self.socket!r})"

    # -- transport --------------------------------------------------------

    def _dial_error(self, err: OSError) -> LabvmError:
        """Turn a failed dial into advice: does labvmd run, may we talk to it."""
        if isinstance(err, FileNotFoundError):
            return Unavailable(
                f"labvmd is not running: no socket at {self.socket}",
                _START_HINT + "; use LABVM_SOCKET for another daemon",
            )
        if isinstance(err, ConnectionRefusedError):
            return Unavailable(
                f"labvmd is not running: {self.socket} refuses connections (stale socket)",
                _START_HINT,
            )
        if isinstance(err, PermissionError):
            return PermissionDenied(
                f"permission denied on {self.socket}",
                "add yourself to the labvm group (`sudo usermod -aG labvm $USER`) and log in again",
            )
        return Unavailable(f"cannot reach labvmd at {self.socket}: {err}")

    def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> tuple[_UnixHTTPConnection, http.client.HTTPResponse]:
        """Send one request; return the connection and a 2xx response.

        A non-2xx answer is read, the connection closed, and the daemon's
        error raised as its typed exception.
        """
        conn = _UnixHTTPConnection(self.socket, timeout)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise self._dial_error(e) from e
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise Unavailable(f"labvmd at {self.socket}: {e}") from e
        if resp.status >= 400:
            try:
                raw = resp.read(1 << 20)
            finally:
                conn.close()
            try:
                envelope = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                text = raw.decode(errors="replace").strip()
                raise Internal(f"labvmd answered {resp.status} {resp.reason}: {text}") from None
            raise error_from(envelope, f"labvmd answered {resp.status} {resp.reason}")
        return conn, resp

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Make one call and return its decoded JSON body (None if empty).

        This is the escape hatch for routes without a method here, e.g.
        ``client.request("GET", "/v1/quota")``.
        """
        conn, resp = self._open(method, path, body, self.timeout)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unavailable(f"labvmd at {self.socket}: {e}") from e
        finally:
            conn.close()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise Internal(f"labvmd answered {method} {path} with what is not JSON: {e}") from e

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """Follow an NDJSON stream, yielding one decoded object per line."""
        conn, resp = self._open("GET", path, None, None)
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as e:
                    raise Unavailable(f"lost labvmd while following {path}: {e}") from e
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise Internal(f"labvmd sent a line of {path} that is not JSON: {e}") from e
        finally:
            conn.close()

    # -- small read-only calls ------------------------------------------

    def info(self) -> dict[str, Any]:
        """Daemon details and the caller (``GET /v1/info``)."""
        return self.request("GET", "/v1/info")

    def whoami(self) -> dict[str, Any]:
        """The caller, groups, role and rights (``GET /v1/whoami``)."""
        return self.request("GET", "/v1/whoami")


class Instances:
    """``client.instances``: list, show, create and drive instances."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, mine: bool = False, owner: str | None = None) -> list[Instance]:
        """The instances the caller may see.

        Args:
            mine: only those the caller created or was assigned.
            owner: only those of this user.
        """
        query: dict[str, str] = {}
        if mine:
            query["mine"] = "1"
        if owner:
            query["owner"] = owner
        path = "/v1/instances"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return [Instance.from_json(d) for d in self._c.request("GET", path) or []]

    def get(self, name: str) -> Instance:
        """One instance; raises :class:`labvm.NotFound` when there is none."""
        return Instance.from_json(self._c.request("GET", f"/v1/instances/{_q(name)}"))

    def create(
        self,
        name: str,
        size: str,
        image: str,
        ssh_public_key: str | None = None,
        vnet: str | None = None,
        subnet: str | None = None,
        assign_to: str | None = None,
        setup_script: str | None = None,
        startup_script: str | None = None,
        disk_size: str | None = None,
        datasets: Iterable[str] | None = None,
        idle_shutdown: IdleValue | None = None,
    ) -> Operation:
        """Start creating an instance; wait on the returned operation.

        Args:
            name: the instance's name (also its guest hostname).
            size: a size from ``GET /v1/sizes``, e.g. ``"Standard_B1s"``.
            image: an image in the daemon's catalogue.
            ssh_public_key: an OpenSSH public key; without one SSH stays off.
            vnet, subnet: where to attach it; the default network otherwise.
            assign_to: create it for this user (owners only).
            setup_script: runs once, as root, at the first boot.
            startup_script: runs at every boot.
            disk_size: the OS disk's virtual size, e.g. ``"120G"``.
            datasets: names from ``client.datasets.list()`` the guest sees
                read-only at ``/datasets/NAME``; fixed at create.
            idle_shutdown: stop it after this long unused (``"30m"``,
                ``"2h"``, ``"1d"``, a timedelta) or ``"off"``; None for the
                host's default. The host's bounds (15m to 3d unless
                configured) are checked by labvmd.
        """
        if isinstance(datasets, str):
            raise TypeError("datasets is a list of names, e.g. ['imagenet'], not a string")
        body: dict[str, Any] = {"name": name, "size": size, "image": image}
        optional = {
            "ssh_public_key": ssh_public_key,
            "vnet": vnet,
            "subnet": subnet,
            "assign_to": assign_to,
            "setup_script": setup_script,
            "startup_script": startup_script,
            "disk_size": disk_size,
        }
        body.update({k: v for k, v in optional.items() if v})
        if datasets:
            body["datasets"] = list(datasets)
        if idle_shutdown is not None:
            body["idle_shutdown"] = _idle_text(idle_shutdown)
        return Operation.from_json(self._c.request("POST", "/v1/instances", body))

    def _action(self, name: str, action: str) -> Operation:
        return Operation.from_json(self._c.request("POST", f"/v1/instances/{_q(name)}/{action}"))

    def start(self, name: str) -> Operation:
        """Start a stopped instance."""
        return self._action(name, "start")

    def stop(self, name: str) -> Operation:
        """Shut an instance down (cleanly, then forcibly after a timeout)."""
        return self._action(name, "stop")

    def restart(self, name: str) -> Operation:
        """Reboot an instance."""
        return self._action(name, "restart")

    def delete(self, name: str) -> Operation:
        """Delete an instance and its disk."""
        return Operation.from_json(self._c.request("DELETE", f"/v1/instances/{_q(name)}"))

    def set_idle_shutdown(self, name: str, value: IdleValue | None) -> Instance:
        """Set the idle shutdown (``"2h"``, a timedelta) or turn it off (None, ``"off"``).

        Takes effect at the idle policy's next look, also while an operation
        runs. Returns the instance; its ``idle_shutdown.limit`` is the value
        now in force. Whoever may stop the instance may set it.
        """
        text = "off" if value is None else _idle_text(value)
        d = self._c.request("PUT", f"/v1/instances/{_q(name)}/idle-shutdown", {"idle_shutdown": text})
        return Instance.from_json(d)


class Datasets:
    """``client.datasets``: host directories instances may see read-only.

    Anyone with read access lists them; adding and removing is for owners.
    """

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[Dataset]:
        """The declared datasets, with the instances created with each."""
        return [Dataset.from_json(d) for d in self._c.request("GET", "/v1/datasets") or []]

    def add(self, name: str, path: str) -> Dataset:
        """Declare ``path``, an absolute directory on labvmd's host, as ``name``.

        Raises :class:`labvm.AlreadyExists` for a taken name and
        :class:`labvm.InvalidArgument` for a path that is not an existing
        absolute directory (or overlaps labvmd's data).
        """
        return Dataset.from_json(self._c.request("POST", "/v1/datasets", {"name": name, "path": path}))

    def remove(self, name: str) -> None:
        """Forget a dataset (its directory is left alone).

        Raises :class:`labvm.Conflict` naming the instances created with it.
        """
        self._c.request("DELETE", f"/v1/datasets/{_q(name)}")


class Schedules:
    """``client.schedules``: cron times at which labvmd stops and starts instances."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, name: str | None = None) -> list[Schedule]:
        """The schedules of instance ``name``, or every one the caller may see."""
        path = f"/v1/instances/{_q(name)}/schedules" if name else "/v1/schedules"
        return [Schedule.from_json(d) for d in self._c.request("GET", path) or []]

    def add(
        self,
        name: str,
        stop: str | None = None,
        start: str | None = None,
        timezone: str | None = None,
    ) -> Schedule:
        """Add a schedule to instance ``name``.

        Args:
            stop, start: five-field cron expressions (``"0 19 * * 1-5"``)
                or ``@daily``-style shorthands; at least one.
            timezone: an IANA zone the times are in, e.g. ``"Europe/Lisbon"``
                or ``"UTC"``; required, so a schedule keeps its meaning.

        Whoever may stop the instance may add a stop; a start also needs the
        right to start it. Raises :class:`labvm.InvalidArgument` for a bad
        expression or an unknown zone, :class:`labvm.Conflict` when the
        instance has as many schedules as it may.
        """
        if not stop and not start:
            raise InvalidArgument(
                "a schedule needs stop, start or both",
                "e.g. stop='0 19 * * 1-5', start='0 8 * * 1-5', timezone='Europe/Lisbon'",
            )
        if not timezone:
            raise InvalidArgument("timezone is required", "e.g. timezone='Europe/Lisbon', or timezone='UTC'")
        body: dict[str, Any] = {"timezone": timezone}
        if stop:
            body["stop"] = stop
        if start:
            body["start"] = start
        return Schedule.from_json(self._c.request("POST", f"/v1/instances/{_q(name)}/schedules", body))

    def remove(self, name: str, schedule_id: int) -> None:
        """Remove schedule ``schedule_id`` of instance ``name``.

        Raises :class:`labvm.NotFound` when the instance has no such schedule.
        """
        self._c.request("DELETE", f"/v1/instances/{_q(name)}/schedules/{_q(schedule_id)}")


ProgressCallback = Callable[[Operation], None]


class Operations:
    """``client.operations``: look at and wait on asynchronous work."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, instance: str | None = None) -> list[Operation]:
        """Recent operations, oldest first (needs the reader role).

        With ``instance``, that instance's operations only, whoever started
        them: its own user may list them without a role.
        """
        path = f"/v1/instances/{_q(instance)}/operations" if instance else "/v1/operations"
        return [Operation.from_json(d) for d in self._c.request("GET", path)]

    def get(self, op: Operation | str) -> Operation:
        """An operation as it is now."""
        op_id = op.id if isinstance(op, Operation) else op
        return Operation.from_json(self._c.request("GET", f"/v1/operations/{_q(op_id)}"))

    def wait(self, op: Operation | str, progress: ProgressCallback | None = None) -> Operation:
        """Follow an operation until it is done and return its final state.

        ``progress`` is called with the operation now and at each change.
        A failed operation raises its error (e.g. :class:`labvm.Unavailable`),
        a cancelled one :class:`labvm.Cancelled`; either carries the final
        operation as ``.operation``.
        """
        op_id = op.id if isinstance(op, Operation) else op
        resume = f"`labvm wait {op_id}` or client.operations.wait({op_id!r}) resumes waiting"
        for d in self._c.stream(f"/v1/operations/{_q(op_id)}/wait"):
            cur = Operation.from_json(d)
            if progress is not None:
                progress(cur)
            if not cur.done:
                continue
            if cur.status == FAILED:
                err = error_from(cur.error, f"operation {op_id} ({cur.kind} {cur.target}) failed")
                err.operation = cur
                raise err
            if cur.status == CANCELLED:
                msg = (cur.error or {}).get("message") or f"operation {op_id} ({cur.kind} {cur.target}) was cancelled"
                err = Cancelled(msg, (cur.error or {}).get("hint", ""))
                err.operation = cur
                raise err
            return cur
        raise Unavailable(f"labvmd closed the stream of operation {op_id} before it finished", resume)


class Jobs:
    """``client.jobs``: commands queued to run in an instance's guest.

    Only the instance's own user (its creator or assigned user) may use them.
    """

    def __init__(self, client: Client) -> None:
        self._c = client

    def submit(self, name: str, argv: list[str]) -> Job:
        """Queue ``argv`` (no shell) on instance ``name``; the job is Queued."""
        if isinstance(argv, str):
            raise TypeError("argv is a list of arguments, e.g. ['python3', 'train.py'], not a string")
        body = {"command": list(argv)}
        return Job.from_json(self._c.request("POST", f"/v1/instances/{_q(name)}/jobs", body))

    def list(self, name: str) -> list[Job]:
        """The instance's jobs, oldest first."""
        d = self._c.request("GET", f"/v1/instances/{_q(name)}/jobs") or {}
        return [Job.from_json(j) for j in d.get("jobs") or []]

    def get(self, name: str, job_id: int) -> Job:
        """One job as it is now."""
        return Job.from_json(self._c.request("GET", f"/v1/instances/{_q(name)}/jobs/{_q(job_id)}"))

    def logs(self, name: str, job_id: int) -> JobLogs:
        """The job's output so far (the last MiB of stdout and of stderr)."""
        return JobLogs.from_json(self._c.request("GET", f"/v1/instances/{_q(name)}/jobs/{_q(job_id)}/logs"))

    def cancel(self, name: str, job_id: int) -> Job:
        """Cancel a queued or running job; :class:`labvm.Conflict` if it ended."""
        return Job.from_json(self._c.request("POST", f"/v1/instances/{_q(name)}/jobs/{_q(job_id)}/cancel"))

    def wait(self, name: str, job_id: int, poll: float = 1.0, timeout: float | None = None) -> Job:
        """Poll until the job ended and return it (whatever its exit code).

        Raises :class:`labvm.Unavailable` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(name, job_id)
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise Unavailable(
                    f"job {job_id} on {name} is still {job.state} after {timeout:g}s",
                    f"`labvm job list {name}` tells how it goes",
                )
            time.sleep(poll)
