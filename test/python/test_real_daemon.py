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
        cfg = labvm.ComputeInstance.provisioning_configuration(vm_size=SIZE, image=IMAGE)
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
