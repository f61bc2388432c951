"""Unit tests of the labvm Python client against a fake labvmd on a Unix socket."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import tempfile

import pytest

import labvm
from fakeserver import FakeDaemon

ERRORS_GO = os.path.join(os.path.dirname(__file__), "..", "..", "daemon", "api", "errors.go")


def daemon_codes() -> dict[str, int]:
    """The daemon's error codes and their HTTP statuses, read from errors.go."""
    src = open(ERRORS_GO).read()
    consts = dict(re.findall(r'^\s*(Code\w+)\s+Code\s*=\s*"(\w+)"', src, re.M))
    # The mapping in HTTPStatus: `case CodeA, CodeB:` then `return http.StatusX`.
    status_names = {
        "StatusBadRequest": 400, "StatusNotFound": 404, "StatusConflict": 409,
        "StatusTooManyRequests": 429, "StatusForbidden": 403, "StatusServiceUnavailable": 503,
        "StatusInsufficientStorage": 507, "StatusRequestEntityTooLarge": 413,
    }
    out = {code: 500 for code in consts.values()}
    for cases, status in re.findall(r"case ([\w, ]+):\s*return http\.(\w+)", src):
        for c in cases.split(","):
            out[consts[c.strip()]] = status_names[status]
    return out


CODES = daemon_codes()


@pytest.fixture
def fake():
    f = FakeDaemon()
    yield f
    f.close()


@pytest.fixture
def client(fake):
    return labvm.Client(fake.socket)


def op_json(status="running", stages=(), error=None, kind="create", target="dev"):
    d = {
        "id": "op-1", "kind": kind, "target": target, "caller": "alice", "status": status,
        "stages": [{"step": s, "name": s.title(), "detail": "", "started_at": "t"} for s in stages],
        "created_at": "t",
    }
    if error:
        d["error"] = error
    return d


# -- errors -----------------------------------------------------------------


def test_errors_go_was_read():
    assert len(CODES) >= 12 and CODES["NotFound"] == 404


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_daemon_error_code_is_its_own_exception(fake, client, code):
    fake.route("GET", "/v1/instances/dev", CODES[code],
               {"error": {"code": code, "message": f"it is {code}", "hint": "do this"}})
    with pytest.raises(labvm.LabvmError) as ei:
        client.instances.get("dev")
    e = ei.value
    assert type(e).__name__ == code, f"{code} raised {type(e).__name__}"
    assert getattr(labvm, code) is type(e)
    assert (e.code, e.message, e.hint) == (code, f"it is {code}", "do this")
    assert "do this" in str(e)


def test_every_exception_has_a_daemon_code():
    classes = {c.__name__ for c in vars(labvm).values()
               if isinstance(c, type) and issubclass(c, labvm.LabvmError) and c is not labvm.LabvmError}
    assert classes == set(CODES)


def test_unknown_code_keeps_it(fake, client):
    fake.route("GET", "/v1/instances/dev", 418, {"error": {"code": "Teapot", "message": "short and stout"}})
    with pytest.raises(labvm.LabvmError) as ei:
        client.instances.get("dev")
    assert ei.value.code == "Teapot" and ei.value.message == "short and stout"


def test_an_answer_that_is_not_an_error_envelope_is_internal(fake, client):
    fake.route("GET", "/v1/instances/dev", 502, b"bad gateway\n")
    with pytest.raises(labvm.Internal, match="502.*bad gateway"):
        client.instances.get("dev")


# -- requests ---------------------------------------------------------------


def test_create_sends_only_what_is_given(fake, client):
    fake.route("POST", "/v1/instances", 202, op_json())
    op = client.instances.create("dev", "Standard_B1s", "tiny", ssh_public_key="ssh-ed25519 AAAA k", disk_size="8G")
    assert op.id == "op-1" and op.kind == "create" and not op.done
    assert fake.requests[-1].json() == {
        "name": "dev", "size": "Standard_B1s", "image": "tiny",
        "ssh_public_key": "ssh-ed25519 AAAA k", "disk_size": "8G",
    }


def test_list_filters_and_escapes(fake, client):
    inst = {"name": "a", "state": "Running", "size": {"name": "Standard_B1s"}, "owner": "alice"}
    fake.routes[("GET", "/v1/instances?mine=1&owner=bob+x")] = lambda r: (200, json.dumps([inst]).encode())
    (got,) = client.instances.list(mine=True, owner="bob x")
    assert (got.name, got.state, got.size, got.owner) == ("a", "Running", "Standard_B1s", "alice")
    fake.route("POST", "/v1/instances/a%2Fb/stop", 202, op_json(kind="stop"))
    assert client.instances.stop("a/b").kind == "stop"


def test_actions_use_their_routes(fake, client):
    for action in ("start", "stop", "restart"):
        fake.route("POST", f"/v1/instances/dev/{action}", 202, op_json(kind=action))
        assert getattr(client.instances, action)("dev").kind == action
    fake.route("DELETE", "/v1/instances/dev", 202, op_json(kind="delete"))
    assert client.instances.delete("dev").kind == "delete"


def test_socket_from_environment(monkeypatch):
    monkeypatch.setenv("LABVM_SOCKET", "/x/y.sock")
    assert labvm.Client().socket == "/x/y.sock"
    monkeypatch.delenv("LABVM_SOCKET")
    assert labvm.Client().socket == "/run/labvm/labvm.sock"


# -- waiting on operations ----------------------------------------------------


def test_list_operations_of_all_or_one_instance(fake, client):
    every = [op_json(target="dev"), op_json(kind="image-import", target="img")]
    mine = [op_json("succeeded", ["boot"], kind="start", target="my dev")]
    fake.routes[("GET", "/v1/operations")] = lambda r: (200, json.dumps(every).encode())
    fake.routes[("GET", "/v1/instances/my%20dev/operations")] = lambda r: (200, json.dumps(mine).encode())
    assert [(o.kind, o.target) for o in client.operations.list()] == [("create", "dev"), ("image-import", "img")]
    ops = client.operations.list(instance="my dev")
    assert [(o.kind, o.target, o.status) for o in ops] == [("start", "my dev", "succeeded")]


def test_wait_calls_progress_for_every_line(fake, client):
    lines = [op_json(stages=["disk"]), op_json(stages=["disk", "boot"]), op_json("succeeded", ["disk", "boot"])]
    fake.route("GET", "/v1/operations/op-1/wait", 200, lines)
    seen = []
    final = client.operations.wait(labvm.Operation.from_json(op_json()), progress=seen.append)
    assert [len(o.stages) for o in seen] == [1, 2, 2]
    assert [s.step for s in seen[1].stages] == ["disk", "boot"]
    assert final.status == "succeeded" and final.done


def test_wait_raises_the_operations_typed_error(fake, client):
    err = {"code": "Unavailable", "message": "guest did not answer", "hint": "see the console"}
    fake.route("GET", "/v1/operations/op-1/wait", 200, [op_json(stages=["boot"]), op_json("failed", ["boot"], err)])
    with pytest.raises(labvm.Unavailable) as ei:
        client.operations.wait("op-1")
    assert ei.value.hint == "see the console"
    assert ei.value.operation.status == "failed"


def test_wait_raises_cancelled(fake, client):
    fake.route("GET", "/v1/operations/op-1/wait", 200, [op_json("cancelled", ["boot"])])
    with pytest.raises(labvm.Cancelled, match="cancelled"):
        client.operations.wait("op-1")


def test_wait_on_a_stream_that_ends_early_is_unavailable(fake, client):
    fake.route("GET", "/v1/operations/op-1/wait", 200, [op_json(stages=["disk"])])
    with pytest.raises(labvm.Unavailable, match="before it finished") as ei:
        client.operations.wait("op-1")
    assert "resumes waiting" in ei.value.hint


def test_wait_on_an_unknown_operation_is_not_found(fake, client):
    fake.route("GET", "/v1/operations/nope/wait", 404, {"error": {"code": "NotFound", "message": "no operation nope"}})
    with pytest.raises(labvm.NotFound):
        client.operations.wait("nope")


# -- jobs -------------------------------------------------------------------------


def job_json(state, exit_code=None):
    d = {"id": 1, "instance": "dev", "command": ["python3", "train.py"], "state": state, "submitter": "alice"}
    if exit_code is not None:
        d["exit_code"] = exit_code
    return d


def test_jobs(fake, client):
    fake.route("POST", "/v1/instances/dev/jobs", 200, job_json("Queued"))
    job = client.jobs.submit("dev", ["python3", "train.py"])
    assert fake.requests[-1].json() == {"command": ["python3", "train.py"]}
    assert (job.id, job.state, job.done) == (1, "Queued", False)
    with pytest.raises(TypeError):
        client.jobs.submit("dev", "python3 train.py")  # type: ignore[arg-type]

    states = iter([job_json("Running"), job_json("Running"), job_json("Succeeded", 0)])
    fake.routes[("GET", "/v1/instances/dev/jobs/1")] = lambda r: (200, next(states))
    done = client.jobs.wait("dev", 1, poll=0.01)
    assert (done.state, done.exit_code, done.done) == ("Succeeded", 0, True)

    fake.route("GET", "/v1/instances/dev/jobs/1/logs", 200, {
        "job": job_json("Succeeded", 0),
        "stdout": base64.b64encode(b"epoch 1\n").decode(), "stderr": base64.b64encode(b"warn\n").decode()})
    logs = client.jobs.logs("dev", 1)
    assert (logs.stdout, logs.stderr, logs.truncated) == (b"epoch 1\n", b"warn\n", False)

    fake.route("GET", "/v1/instances/dev/jobs", 200, {"instance": "dev", "jobs": [job_json("Succeeded", 0)]})
    assert [j.id for j in client.jobs.list("dev")] == [1]


def test_job_wait_times_out(fake, client):
    fake.route("GET", "/v1/instances/dev/jobs/1", 200, job_json("Running"))
    with pytest.raises(labvm.Unavailable, match="still Running"):
        client.jobs.wait("dev", 1, poll=0.01, timeout=0.05)


# -- connection errors ---------------------------------------------------------------


def test_no_socket_says_labvmd_is_not_running():
    d = tempfile.mkdtemp(prefix="lvpy-", dir="/tmp")
    with pytest.raises(labvm.Unavailable, match="labvmd is not running: no socket") as ei:
        labvm.Client(os.path.join(d, "nothing.sock")).instances.list()
    assert "systemctl start labvmd" in ei.value.hint
    os.rmdir(d)


def test_stale_socket_says_labvmd_is_not_running():
    d = tempfile.mkdtemp(prefix="lvpy-", dir="/tmp")
    path = os.path.join(d, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening: what a dead daemon leaves behind
    s.close()
    with pytest.raises(labvm.Unavailable, match="stale socket"):
        labvm.Client(path).instances.list()
    os.unlink(path)
    os.rmdir(d)


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any socket; the e2e test runs this as a plain user")
def test_socket_without_permission_says_how_to_get_in(fake):
    os.chmod(fake.socket, 0o600)
    os.chmod(fake.dir, 0o755)
    if os.stat(fake.socket).st_uid == os.geteuid():
        os.chmod(fake.socket, 0o000)
    with pytest.raises(labvm.PermissionDenied, match="permission denied on") as ei:
        labvm.Client(fake.socket).instances.list()
    assert "labvm group" in ei.value.hint


# -- the familiar layer ----------------------------------------------------------------


def test_compute_instance_not_found(fake, client):
    with pytest.raises(labvm.NotFound):
        labvm.ComputeInstance("dev", client=client)


def test_provisioning_configuration_checks_ssh():
    with pytest.raises(labvm.InvalidArgument, match="needs admin_user_ssh_public_key"):
        labvm.ComputeInstance.provisioning_configuration(vm_size="Standard_B1s", ssh_public_access=True)
    with pytest.raises(labvm.InvalidArgument, match="ssh_public_access=False"):
        labvm.ComputeInstance.provisioning_configuration(vm_size="Standard_B1s", admin_user_ssh_public_key="k")
    cfg = labvm.ComputeInstance.provisioning_configuration(
        vm_size="Standard_B1s", ssh_public_access=True, admin_user_ssh_public_key="k", image="tiny", vnet_name="v")
    assert (cfg.ssh_public_key, cfg.vnet_name, cfg.image) == ("k", "v", "tiny")


def test_create_and_wait_prints_each_stage_as_it_starts(fake, client):
    fake.route("POST", "/v1/instances", 202, op_json())
    fake.route("GET", "/v1/operations/op-1/wait", 200, [
        op_json(stages=["disk"]), op_json(stages=["disk"]), op_json(stages=["disk", "boot"]),
        op_json("succeeded", ["disk", "boot"])])
    cfg = labvm.ComputeInstance.provisioning_configuration(vm_size="Standard_B1s", image="tiny", vnet_name="v1")
    inst = labvm.ComputeInstance.create("dev", cfg, client=client)
    assert fake.requests[-1].json() == {"name": "dev", "size": "Standard_B1s", "image": "tiny", "vnet": "v1"}
    out = io.StringIO()
    final = inst.wait_for_completion(show_output=True, out=out)
    assert final.status == "succeeded"
    assert out.getvalue().splitlines() == ["create dev: Disk", "create dev: Boot", "create dev: succeeded"]
    assert inst.wait_for_completion() is None  # nothing left to wait for

    fake.route("GET", "/v1/instances/dev", 200, {"name": "dev", "state": "Running"})
    assert inst.get_status() == "Running"


def test_compute_instance_actions_wait_and_raise(fake, client):
    fake.route("GET", "/v1/instances/dev", 200, {"name": "dev", "state": "Running"})
    inst = labvm.ComputeInstance("dev", client=client)
    fake.route("POST", "/v1/instances/dev/stop", 202, op_json(kind="stop"))
    fake.route("GET", "/v1/operations/op-1/wait", 200, [op_json("succeeded", ["shutdown"], kind="stop")])
    assert inst.stop().status == "succeeded"
    assert inst.stop(wait=False).status == "running"
    fake.route("GET", "/v1/operations/op-1/wait", 200,
               [op_json("failed", ["boot"], {"code": "Unavailable", "message": "no guest"}, kind="start")])
    fake.route("POST", "/v1/instances/dev/start", 202, op_json(kind="start"))
    with pytest.raises(labvm.Unavailable, match="no guest"):
        inst.start()

    fake.route("POST", "/v1/instances/dev/jobs", 200, job_json("Queued"))
    fake.route("GET", "/v1/instances/dev/jobs/1", 200, job_json("Failed", 2))
    job = inst.submit(["python3", "train.py"])
    assert job.wait(poll=0.01).exit_code == 2
