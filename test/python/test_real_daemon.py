"""The Python client against a real labvmd, run by a contributor.

test/e2e/python_test.go starts a private labvmd, imports the test image and
runs this module as a plain Unix user with the contributor role. Outside it
(LABVM_E2E_IMAGE unset) the module is skipped; the Go test fails on any skip.

Environment:
    LABVM_SOCKET            the private daemon's socket
    LABVM_E2E_IMAGE         an image in its catalogue
    LABVM_E2E_SIZE          a size to create with (default Standard_B1s)
    LABVM_E2E_INSTANCE      the instance name to use
    LABVM_E2E_OTHER_USER    another Unix user, to be refused creating for
    LABVM_E2E_INSTALLED     where labvm must be imported from (the venv)
    LABVM_E2E_DATASET       a dataset the owner declared, holding hello.txt
    LABVM_E2E_DATASET_PATH  its host directory
"""

from __future__ import annotations

import io
import os

import pytest

import labvm

IMAGE = os.environ.get("LABVM_E2E_IMAGE", "")
SIZE = os.environ.get("LABVM_E2E_SIZE", "Standard_B1s")
NAME = os.environ.get("LABVM_E2E_INSTANCE", "py-dev")
OTHER = os.environ.get("LABVM_E2E_OTHER_USER", "")
DATASET = os.environ.get("LABVM_E2E_DATASET", "")
DATASET_PATH = os.environ.get("LABVM_E2E_DATASET_PATH", "")
IDLE_MINUTES = 45

pytestmark = pytest.mark.skipif(not IMAGE, reason="needs a real labvmd: run by test/e2e/python_test.go")


@pytest.fixture(scope="module")
def client() -> labvm.Client:
    return labvm.Client()


def seed(client: labvm.Client, out: io.StringIO) -> labvm.ComputeInstance:
    """What a notebook's first cell does: use the instance, or make it."""
    try:
        inst = labvm.ComputeInstance(NAME, client=client)
        print("found existing instance, use it", file=out)
    except labvm.NotFound:
        cfg = labvm.ComputeInstance.provisioning_configuration(
            vm_size=SIZE, image=IMAGE, idle_time_before_shutdown_minutes=IDLE_MINUTES, datasets=[DATASET])
        inst = labvm.ComputeInstance.create(NAME, cfg, client=client)
        inst.wait_for_completion(show_output=True, out=out)
    return inst


def test_installed_package_is_the_one_imported():
    want = os.environ.get("LABVM_E2E_INSTALLED")
    assert want, "LABVM_E2E_INSTALLED unset"
    assert os.path.realpath(labvm.__file__).startswith(os.path.realpath(want)), labvm.__file__


def test_the_caller_is_a_contributor(client):
    me = client.whoami()
    assert me["role"] == "contributor", me
    assert me["uid"] == os.getuid()


def test_not_found(client):
    with pytest.raises(labvm.NotFound):
        labvm.ComputeInstance(NAME + "-nope", client=client)
    with pytest.raises(labvm.NotFound):
        client.instances.delete(NAME + "-nope")
    with pytest.raises(labvm.NotFound):
        client.operations.get("no-such-operation")


def test_invalid_argument(client):
    with pytest.raises(labvm.InvalidArgument) as ei:
        client.instances.create("Not A Name!", SIZE, IMAGE)
    assert ei.value.code == "InvalidArgument" and ei.value.message
    with pytest.raises(labvm.InvalidArgument):
        client.instances.create(NAME + "-x", "Standard_Nope", IMAGE)


def test_permission_denied(client):
    assert OTHER, "LABVM_E2E_OTHER_USER unset"
    # Creating on behalf of someone else is for owners.
    with pytest.raises(labvm.PermissionDenied) as ei:
        client.instances.create(NAME + "-x", SIZE, IMAGE, assign_to=OTHER)
    assert ei.value.message
    # So is managing roles.
    with pytest.raises(labvm.PermissionDenied, match="roles/write"):
        client.request("POST", "/v1/roles", {"principal": OTHER, "role": "owner"})


def test_datasets_are_listed_not_managed_by_contributors(client):
    assert DATASET and DATASET_PATH, "LABVM_E2E_DATASET(_PATH) unset"
    (ds,) = [d for d in client.datasets.list() if d.name == DATASET]
    assert (ds.path, ds.used_by) == (DATASET_PATH, [])
    with pytest.raises(labvm.PermissionDenied, match="datasets/write"):
        client.datasets.add(DATASET + "-x", DATASET_PATH)
    with pytest.raises(labvm.PermissionDenied, match="datasets/write"):
        client.datasets.remove(DATASET)


def test_create_refuses_unknown_dataset_and_bad_idle(client):
    with pytest.raises(labvm.InvalidArgument, match="nope-ds"):
        client.instances.create(NAME + "-x", SIZE, IMAGE, datasets=["nope-ds"])
    with pytest.raises(labvm.InvalidArgument, match="idle shutdown"):
        client.instances.create(NAME + "-x", SIZE, IMAGE, idle_shutdown="5m")
    with pytest.raises(labvm.NotFound):
        client.instances.get(NAME + "-x")


def test_seed_creates_then_finds(client):
    out = io.StringIO()
    inst = seed(client, out)
    print(out.getvalue(), end="")  # shown in the e2e log (pytest -rA)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(l.startswith(f"create {NAME}: ") for l in lines), lines
    assert lines[-1] == f"create {NAME}: succeeded"
    assert inst.get_status() == "Running"

    out = io.StringIO()
    again = seed(client, out)
    assert out.getvalue() == "found existing instance, use it\n"
    assert again.status == "Running" and again.ip
    assert [i.name for i in client.instances.list(mine=True)] == [NAME]


def test_created_with_the_dataset_and_idle_shutdown(client):
    inst = labvm.ComputeInstance(NAME, client=client)
    assert inst.instance.datasets == [DATASET]
    assert inst.idle_time_before_shutdown_minutes == IDLE_MINUTES
    assert inst.instance.idle_shutdown.limit == f"{IDLE_MINUTES}m"
    (ds,) = [d for d in client.datasets.list() if d.name == DATASET]
    assert ds.used_by == [NAME]


def test_idle_shutdown_set_and_read_back(client):
    got = client.instances.set_idle_shutdown(NAME, "2h")
    assert (got.idle_shutdown.limit, got.idle_shutdown.limit_seconds) == ("2h", 7200)
    assert client.instances.get(NAME).idle_shutdown.limit == "2h"
    with pytest.raises(labvm.InvalidArgument, match="at least"):
        client.instances.set_idle_shutdown(NAME, "1m")
    assert client.instances.get(NAME).idle_shutdown.limit == "2h"  # unchanged

    inst = labvm.ComputeInstance(NAME, client=client)
    inst.set_idle_time_before_shutdown(None)
    assert inst.idle_time_before_shutdown_minutes is None
    assert not client.instances.get(NAME).idle_shutdown.enabled
    inst.set_idle_time_before_shutdown(IDLE_MINUTES)
    assert labvm.ComputeInstance(NAME, client=client).idle_time_before_shutdown_minutes == IDLE_MINUTES


def test_schedule_added_listed_removed(client):
    # New Year's night: never due while the test runs.
    sc = client.schedules.add(NAME, stop="0 3 1 1 *", start="30 3 1 1 *", timezone="Europe/Lisbon")
    assert (sc.instance, sc.stop, sc.start, sc.timezone) == (NAME, "0 3 1 1 *", "30 3 1 1 *", "Europe/Lisbon")
    assert sc.id >= 1 and sc.next is not None and sc.next.action == "stop" and sc.last is None
    assert [s.id for s in client.schedules.list(NAME)] == [sc.id]
    assert [(s.instance, s.id) for s in client.schedules.list()] == [(NAME, sc.id)]
    assert [s.id for s in client.instances.get(NAME).schedules] == [sc.id]

    with pytest.raises(labvm.InvalidArgument, match="time zone"):
        client.schedules.add(NAME, stop="0 3 1 1 *", timezone="Mars/Olympus")
    with pytest.raises(labvm.InvalidArgument):
        client.schedules.add(NAME, stop="every evening", timezone="UTC")

    inst = labvm.ComputeInstance(NAME, client=client)
    utc = inst.add_schedule(stop="@yearly")
    assert utc.timezone == "UTC"
    assert [s.id for s in inst.schedules()] == [sc.id, utc.id]
    inst.remove_schedule(utc)
    client.schedules.remove(NAME, sc.id)
    assert client.schedules.list(NAME) == []
    with pytest.raises(labvm.NotFound):
        client.schedules.remove(NAME, sc.id)


def test_already_exists(client):
    cfg = labvm.ComputeInstance.provisioning_configuration(vm_size=SIZE, image=IMAGE)
    with pytest.raises(labvm.AlreadyExists):
        labvm.ComputeInstance.create(NAME, cfg, client=client)


def test_conflict_on_start_when_running(client):
    inst = labvm.ComputeInstance(NAME, client=client)
    with pytest.raises(labvm.Conflict):
        inst.start()


def test_job_output(client):
    inst = labvm.ComputeInstance(NAME, client=client)
    job = inst.submit(["sh", "-c", "echo epoch-1 done; echo warn >&2; exit 3"])
    assert job.id >= 1
    ended = job.wait(poll=0.5, timeout=180)
    assert (ended.state, ended.exit_code) == ("Failed", 3), ended
    logs = job.logs()
    assert logs.stdout == b"epoch-1 done\n" and logs.stderr == b"warn\n"

    ok = inst.submit(["hostname"])
    assert ok.wait(poll=0.5, timeout=180).exit_code == 0
    assert ok.logs().stdout.strip() == NAME.encode()
    assert [j.id for j in inst.jobs()] == [job.id, ok.id]


def test_guest_reads_the_dataset(client):
    # After test_job_output, which counts the instance's jobs.
    inst = labvm.ComputeInstance(NAME, client=client)
    job = inst.submit(["cat", f"/datasets/{DATASET}/hello.txt"])
    assert job.wait(poll=0.5, timeout=180).exit_code == 0, job.logs().stderr
    assert job.logs().stdout == f"hello from {DATASET}\n".encode()


def test_stop_start_delete(client):
    inst = labvm.ComputeInstance(NAME, client=client)
    out = io.StringIO()
    assert inst.stop().status == "succeeded"
    assert inst.get_status() == "Stopped"
    with pytest.raises(labvm.Conflict):
        inst.submit(["true"])  # jobs need a running instance
    inst.start(wait=False)
    inst.wait_for_completion(show_output=True, out=out)
    assert out.getvalue().splitlines()[-1] == f"start {NAME}: succeeded"
    assert inst.get_status() == "Running"
    assert inst.delete().status == "succeeded"
    with pytest.raises(labvm.NotFound):
        labvm.ComputeInstance(NAME, client=client)
