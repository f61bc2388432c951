"""The familiar layer, for people moving from managed notebooks.

It reads like the compute-instance SDKs they know::

    try:
        inst = labvm.ComputeInstance("dev")
        print("found existing instance, use it")
    except labvm.NotFound:
        cfg = labvm.ComputeInstance.provisioning_configuration(
            vm_size="Standard_B1s", image="debian-12")
        inst = labvm.ComputeInstance.create("dev", cfg)
        inst.wait_for_completion(show_output=True)

and is built on :class:`labvm.Client` alone: everything here can be done
with the plain client too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from .client import Client
from .errors import InvalidArgument
from .models import Instance, Job, JobLogs, Operation, Schedule


@dataclass(frozen=True)
class ProvisioningConfiguration:
    """What :meth:`ComputeInstance.create` makes; see
    :meth:`ComputeInstance.provisioning_configuration`."""

    vm_size: str
    image: str
    ssh_public_key: str | None = None
    vnet_name: str | None = None
    subnet_name: str | None = None
    assign_to: str | None = None
    setup_script: str | None = None
    startup_script: str | None = None
    disk_size: str | None = None
    datasets: tuple[str, ...] = ()
    idle_shutdown: str | None = None


def _minutes_text(minutes: int, what: str) -> str:
    """Whole minutes as labvmd's duration text; labvmd checks the bounds."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise InvalidArgument(
            f"{what}={minutes!r}: want a positive whole number of minutes",
            "e.g. 30 or 120 (labvmd accepts 15 minutes to 3 days unless the host says less); None for the host's default",
        )
    return f"{minutes}m"


class ComputeJob:
    """A job submitted with :meth:`ComputeInstance.submit`."""

    def __init__(self, client: Client, job: Job) -> None:
        self._client = client
        self.job = job

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def state(self) -> str:
        """The state last seen (call :meth:`refresh` to update it)."""
        return self.job.state

    @property
    def exit_code(self) -> int | None:
        return self.job.exit_code

    def refresh(self) -> Job:
        """Read the job's state again."""
        self.job = self._client.jobs.get(self.job.instance, self.job.id)
        return self.job

    def wait(self, poll: float = 1.0, timeout: float | None = None) -> Job:
        """Wait until the job ended and return it; check ``exit_code``."""
        self.job = self._client.jobs.wait(self.job.instance, self.job.id, poll=poll, timeout=timeout)
        return self.job

    def logs(self) -> JobLogs:
        """Its output so far: ``.stdout`` and ``.stderr`` as bytes."""
        return self._client.jobs.logs(self.job.instance, self.job.id)

    def cancel(self) -> Job:
        """Cancel it if it has not ended."""
        self.job = self._client.jobs.cancel(self.job.instance, self.job.id)
        return self.job

    def __repr__(self) -> str:
        return f"<ComputeJob {self.job.instance}#{self.job.id} {self.job.state}>"


class ComputeInstance:
    """An existing instance, by name.

    ``ComputeInstance(name)`` raises :class:`labvm.NotFound` when there is
    none (or :class:`labvm.PermissionDenied` when the caller may not see it).
    """

    def __init__(self, name: str, client: Client | None = None) -> None:
        self.name = name
        self._client = client or Client()
        self._instance: Instance | None = self._client.instances.get(name)
        self._operation: Operation | None = None

    # -- making one --------------------------------------------------------

    @staticmethod
    def provisioning_configuration(
        vm_size: str,
        ssh_public_access: bool = False,
        vnet_name: str | None = None,
        subnet_name: str | None = None,
        admin_user_ssh_public_key: str | None = None,
        image: str = "",
        assign_to: str | None = None,
        setup_script: str | None = None,
        startup_script: str | None = None,
        disk_size: str | None = None,
        idle_time_before_shutdown_minutes: int | None = None,
        datasets: list[str] | None = None,
    ) -> ProvisioningConfiguration:
        """Describe an instance to create.

        Args:
            vm_size: a size such as ``"Standard_B1s"`` (``labvm sizes``).
            ssh_public_access: turn SSH on; needs ``admin_user_ssh_public_key``.
            vnet_name, subnet_name: the network to attach it to.
            admin_user_ssh_public_key: an OpenSSH public key (the file's text).
            image: an image in labvmd's catalogue (``labvm image list``).
            assign_to: create it for this user (owners only).
            setup_script, startup_script: shell scripts run as root at the
                first boot and at every boot.
            disk_size: the OS disk's size, e.g. ``"64G"``.
            idle_time_before_shutdown_minutes: stop it after this many
                minutes unused (labvm's idle shutdown); None for the host's
                default.
            datasets: declared datasets (``client.datasets.list()``) the
                guest sees read-only at ``/datasets/NAME``.

        Raises:
            labvm.InvalidArgument: SSH asked for without a key, or a key
                given while SSH is off (labvm turns SSH on exactly when the
                instance has a key); an idle time that is not a positive
                whole number of minutes.
        """
        if ssh_public_access and not admin_user_ssh_public_key:
            raise InvalidArgument(
                "ssh_public_access=True needs admin_user_ssh_public_key",
                "pass the text of your public key, e.g. open(os.path.expanduser('~/.ssh/id_ed25519.pub')).read()",
            )
        if admin_user_ssh_public_key and not ssh_public_access:
            raise InvalidArgument(
                "admin_user_ssh_public_key given but ssh_public_access=False",
                "labvm turns SSH on exactly when an instance has a key: pass ssh_public_access=True, or no key",
            )
        if isinstance(datasets, str):
            raise TypeError("datasets is a list of names, e.g. ['imagenet'], not a string")
        idle = None
        if idle_time_before_shutdown_minutes is not None:
            idle = _minutes_text(idle_time_before_shutdown_minutes, "idle_time_before_shutdown_minutes")
        return ProvisioningConfiguration(
            vm_size=vm_size,
            image=image,
            ssh_public_key=admin_user_ssh_public_key if ssh_public_access else None,
            vnet_name=vnet_name,
            subnet_name=subnet_name,
            assign_to=assign_to,
            setup_script=setup_script,
            startup_script=startup_script,
            disk_size=disk_size,
            datasets=tuple(datasets or ()),
            idle_shutdown=idle,
        )

    @classmethod
    def create(cls, name: str, config: ProvisioningConfiguration, client: Client | None = None) -> ComputeInstance:
        """Start creating ``name``; call :meth:`wait_for_completion` on the result.

        Raises :class:`labvm.AlreadyExists` when the name is taken, and the
        daemon's other refusals (InvalidArgument, PermissionDenied, …) at once.
        """
        client = client or Client()
        op = client.instances.create(
            name,
            size=config.vm_size,
            image=config.image,
            ssh_public_key=config.ssh_public_key,
            vnet=config.vnet_name,
            subnet=config.subnet_name,
            assign_to=config.assign_to,
            setup_script=config.setup_script,
            startup_script=config.startup_script,
            disk_size=config.disk_size,
            datasets=list(config.datasets),
            idle_shutdown=config.idle_shutdown,
        )
        self = cls.__new__(cls)
        self.name = name
        self._client = client
        self._instance = None
        self._operation = op
        return self

    # -- looking at it -----------------------------------------------------

    @property
    def client(self) -> Client:
        return self._client

    @property
    def instance(self) -> Instance:
        """The instance as last read (read now if never)."""
        if self._instance is None:
            return self.refresh()
        return self._instance

    def refresh(self) -> Instance:
        """Read the instance again."""
        self._instance = self._client.instances.get(self.name)
        return self._instance

    def get_status(self) -> str:
        """The instance's state now: Creating, Running, Stopped, …"""
        return self.refresh().state

    @property
    def status(self) -> str:
        """The state last read (see :meth:`get_status` for a fresh one)."""
        return self.instance.state

    @property
    def ip(self) -> str:
        return self.instance.ip

    @property
    def idle_time_before_shutdown_minutes(self) -> int | None:
        """The idle shutdown last read, in minutes; None when it is off."""
        idle = self.instance.idle_shutdown
        return idle.limit_seconds // 60 if idle.enabled else None

    # -- waiting -------------------------------------------------------------

    def wait_for_completion(self, show_output: bool = False, out: TextIO | None = None) -> Operation | None:
        """Wait for the last operation started here (create, start, …).

        With ``show_output`` each stage is printed as it starts, then the
        outcome. Returns the finished operation (None when there was none)
        and raises its error if it failed.
        """
        op = self._operation
        if op is None:
            return None
        stream = out or sys.stdout
        printed = 0

        def progress(cur: Operation) -> None:
            nonlocal printed
            if not show_output:
                return
            for st in cur.stages[printed:]:
                line = f"{cur.kind} {cur.target}: {st.name}"
                if st.detail:
                    line += f" ({st.detail})"
                print(line, file=stream, flush=True)
            printed = max(printed, len(cur.stages))

        try:
            final = self._client.operations.wait(op, progress=progress)
        except Exception as e:
            if show_output:
                print(f"{op.kind} {op.target}: {getattr(e, 'code', 'error')}: {e}", file=stream, flush=True)
            raise
        finally:
            self._operation = None
        if show_output:
            print(f"{final.kind} {final.target}: {final.status}", file=stream, flush=True)
        if final.kind != "delete":
            self._instance = None
        return final

    # -- driving it ----------------------------------------------------------

    def _run(self, op: Operation, wait: bool, show_output: bool) -> Operation:
        self._operation = op
        if not wait:
            return op
        final = self.wait_for_completion(show_output=show_output)
        assert final is not None
        return final

    def start(self, wait: bool = True, show_output: bool = False) -> Operation:
        """Start it; with ``wait`` (the default) until it runs."""
        return self._run(self._client.instances.start(self.name), wait, show_output)

    def stop(self, wait: bool = True, show_output: bool = False) -> Operation:
        """Stop it; with ``wait`` until it is stopped."""
        return self._run(self._client.instances.stop(self.name), wait, show_output)

    def restart(self, wait: bool = True, show_output: bool = False) -> Operation:
        """Restart it; with ``wait`` until it runs again."""
        return self._run(self._client.instances.restart(self.name), wait, show_output)

    def delete(self, wait: bool = True, show_output: bool = False) -> Operation:
        """Delete it and its disk; with ``wait`` until it is gone."""
        return self._run(self._client.instances.delete(self.name), wait, show_output)

    # -- policies --------------------------------------------------------------

    def set_idle_time_before_shutdown(self, minutes: int | None) -> Instance:
        """Stop it after ``minutes`` unused; None turns the idle shutdown off."""
        value = None if minutes is None else _minutes_text(minutes, "minutes")
        self._instance = self._client.instances.set_idle_shutdown(self.name, value)
        return self._instance

    def add_schedule(self, stop: str | None = None, start: str | None = None, timezone: str = "UTC") -> Schedule:
        """Stop and/or start it at cron times, e.g. ``stop="0 19 * * 1-5"``.

        ``timezone`` is the IANA zone of the times (UTC unless given, as in
        the managed service's cron triggers).
        """
        return self._client.schedules.add(self.name, stop=stop, start=start, timezone=timezone)

    def schedules(self) -> list[Schedule]:
        """Its schedules, with when each runs next."""
        return self._client.schedules.list(self.name)

    def remove_schedule(self, schedule: Schedule | int) -> None:
        """Remove one of its schedules (a :class:`labvm.Schedule` or its id)."""
        sid = schedule.id if isinstance(schedule, Schedule) else schedule
        self._client.schedules.remove(self.name, sid)

    # -- jobs ----------------------------------------------------------------

    def submit(self, command: list[str]) -> ComputeJob:
        """Queue a command (a list of arguments, no shell) in the guest."""
        return ComputeJob(self._client, self._client.jobs.submit(self.name, command))

    def jobs(self) -> list[ComputeJob]:
        """Its jobs, oldest first."""
        return [ComputeJob(self._client, j) for j in self._client.jobs.list(self.name)]

    def __repr__(self) -> str:
        state = self._instance.state if self._instance else "?"
        return f"<ComputeInstance {self.name} {state}>"
