"""Datasets, idle shutdown and schedules in the Python client, against a
fake labvmd that keeps them as labvmd does (fakepolicy.py)."""

from __future__ import annotations

import tempfile
from datetime import timedelta

import pytest

import labvm
from fakepolicy import FakePolicy
from fakeserver import FakeDaemon


@pytest.fixture
def fake():
    f = FakeDaemon()
    yield f
    f.close()


@pytest.fixture
def policy(fake):
    p = FakePolicy(fake)
    p.add_instance("dev")
    return p


@pytest.fixture
def client(fake):
    return labvm.Client(fake.socket)


@pytest.fixture
def datadir():
    with tempfile.TemporaryDirectory(prefix="lvpy-ds-") as d:
        yield d


def sent(fake):
    """The body of the last request."""
    return fake.requests[-1].json()


# -- datasets -----------------------------------------------------------------------


def test_datasets_add_list_remove(fake, policy, client, datadir):
    assert client.datasets.list() == []
    ds = client.datasets.add("imagenet", datadir + "/")
    assert sent(fake) == {"name": "imagenet", "path": datadir + "/"}
    assert (ds.name, ds.path, ds.created_by, ds.used_by) == ("imagenet", datadir, "alice", [])
    client.datasets.add("cifar", datadir)
    assert [d.name for d in client.datasets.list()] == ["cifar", "imagenet"]
    assert client.datasets.remove("cifar") is None
    assert fake.requests[-1].method == "DELETE" and fake.requests[-1].path == "/v1/datasets/cifar"
    assert [d.name for d in client.datasets.list()] == ["imagenet"]


@pytest.mark.parametrize("name,path,exc,match", [
    ("Bad Name", None, labvm.InvalidArgument, "invalid dataset name"),
    ("imagenet", "relative/dir", labvm.InvalidArgument, "absolute path"),
    ("imagenet", "/nonexistent/lvpy", labvm.InvalidArgument, "not an existing directory"),
])
def test_dataset_add_refusals_change_nothing(policy, client, datadir, name, path, exc, match):
    with pytest.raises(exc, match=match) as ei:
        client.datasets.add(name, path or datadir)
    assert ei.value.hint
    assert client.datasets.list() == []


def test_dataset_name_taken_and_unknown(policy, client, datadir):
    client.datasets.add("imagenet", datadir)
    with pytest.raises(labvm.AlreadyExists, match="already exists"):
        client.datasets.add("imagenet", datadir)
    with pytest.raises(labvm.NotFound, match="not found") as ei:
        client.datasets.remove("nope")
    assert "dataset list" in ei.value.hint


def test_dataset_in_use_cannot_be_removed(policy, client, datadir):
    client.datasets.add("imagenet", datadir)
    client.instances.create("gpu", "Standard_B1s", "tiny", datasets=["imagenet"])
    (ds,) = client.datasets.list()
    assert ds.used_by == ["gpu"]
    with pytest.raises(labvm.Conflict, match="used by gpu"):
        client.datasets.remove("imagenet")
    assert [d.name for d in client.datasets.list()] == ["imagenet"]
    assert client.instances.get("gpu").datasets == ["imagenet"]


# -- create with datasets and idle shutdown -------------------------------------------


def test_create_sends_datasets_and_idle_shutdown(fake, policy, client, datadir):
    client.datasets.add("imagenet", datadir)
    client.datasets.add("cifar", datadir)
    client.instances.create("gpu", "Standard_B1s", "tiny", datasets=("imagenet", "cifar"), idle_shutdown="30m")
    assert sent(fake) == {"name": "gpu", "size": "Standard_B1s", "image": "tiny",
                          "datasets": ["imagenet", "cifar"], "idle_shutdown": "30m"}
    got = client.instances.get("gpu")
    assert got.idle_shutdown.limit == "30m" and got.idle_shutdown.limit_seconds == 1800
    assert got.idle_shutdown.enabled

    client.instances.create("cpu", "Standard_B1s", "tiny", idle_shutdown=timedelta(days=1, hours=12))
    assert sent(fake)["idle_shutdown"] == "1d12h"
    assert client.instances.get("cpu").idle_shutdown.limit_seconds == 36 * 3600

    client.instances.create("plain", "Standard_B1s", "tiny")
    assert "datasets" not in sent(fake) and "idle_shutdown" not in sent(fake)
    plain = client.instances.get("plain")
    assert plain.idle_shutdown.limit is None and not plain.idle_shutdown.enabled and plain.datasets == []


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"datasets": ["nope"]}, labvm.InvalidArgument, "unknown dataset"),
    ({"datasets": ["imagenet", "imagenet"]}, labvm.InvalidArgument, "given twice"),
    ({"datasets": ["imagenet"] * 9}, labvm.InvalidArgument, "at most 8"),
    ({"idle_shutdown": "5m"}, labvm.InvalidArgument, "at least 15m"),
    ({"idle_shutdown": "4d"}, labvm.InvalidArgument, "at most 3d"),
    ({"idle_shutdown": "soon"}, labvm.InvalidArgument, "use a duration"),
])
def test_create_refusals_from_the_daemon_make_nothing(policy, client, datadir, kwargs, exc, match):
    client.datasets.add("imagenet", datadir)
    with pytest.raises(exc, match=match):
        client.instances.create("gpu", "Standard_B1s", "tiny", **kwargs)
    with pytest.raises(labvm.NotFound):
        client.instances.get("gpu")


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"datasets": "imagenet"}, TypeError, "list of names"),
    ({"idle_shutdown": ""}, labvm.InvalidArgument, "not a duration"),
    ({"idle_shutdown": 30}, labvm.InvalidArgument, "not a duration"),
    ({"idle_shutdown": timedelta(0)}, labvm.InvalidArgument, "positive whole number"),
    ({"idle_shutdown": timedelta(seconds=1.5)}, labvm.InvalidArgument, "positive whole number"),
])
def test_create_refuses_bad_values_before_sending(fake, policy, client, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        client.instances.create("gpu", "Standard_B1s", "tiny", **kwargs)
    assert fake.requests == []


# -- idle shutdown ----------------------------------------------------------------------


def test_set_idle_shutdown_and_off(fake, policy, client):
    inst = client.instances.set_idle_shutdown("dev", "2h")
    assert fake.requests[-1].method == "PUT" and fake.requests[-1].path == "/v1/instances/dev/idle-shutdown"
    assert sent(fake) == {"idle_shutdown": "2h"}
    assert (inst.name, inst.idle_shutdown.limit, inst.idle_shutdown.limit_seconds) == ("dev", "2h", 7200)
    assert client.instances.get("dev").idle_shutdown.limit == "2h"

    assert client.instances.set_idle_shutdown("dev", timedelta(minutes=90)).idle_shutdown.limit == "1h30m"
    off = client.instances.set_idle_shutdown("dev", None)
    assert sent(fake) == {"idle_shutdown": "off"}
    assert off.idle_shutdown.limit is None and off.idle_shutdown.limit_seconds == 0
    assert client.instances.set_idle_shutdown("dev", "2h").idle_shutdown.enabled
    assert not client.instances.set_idle_shutdown("dev", "off").idle_shutdown.enabled


def test_set_idle_shutdown_refusals_keep_the_old_value(policy, client):
    client.instances.set_idle_shutdown("dev", "1h")
    with pytest.raises(labvm.InvalidArgument, match="at least 15m") as ei:
        client.instances.set_idle_shutdown("dev", "10m")
    assert "30m" in ei.value.hint
    with pytest.raises(labvm.InvalidArgument, match="not a duration"):
        client.instances.set_idle_shutdown("dev", "")
    assert client.instances.get("dev").idle_shutdown.limit == "1h"
    with pytest.raises(labvm.NotFound):
        client.instances.set_idle_shutdown("nope", "1h")


# -- schedules ---------------------------------------------------------------------------


def test_schedules_add_list_remove(fake, policy, client):
    policy.add_instance("other")
    sc = client.schedules.add("dev", stop="0 19 * * 1-5", start="0 8 * * 1-5", timezone="Europe/Lisbon")
    assert fake.requests[-1].path == "/v1/instances/dev/schedules"
    assert sent(fake) == {"stop": "0 19 * * 1-5", "start": "0 8 * * 1-5", "timezone": "Europe/Lisbon"}
    assert (sc.id, sc.instance, sc.stop, sc.start, sc.timezone, sc.created_by) == (
        1, "dev", "0 19 * * 1-5", "0 8 * * 1-5", "Europe/Lisbon", "alice")
    assert sc.next is not None and sc.next.action == "stop" and sc.last is None

    only_stop = client.schedules.add("other", stop="@daily", timezone="UTC")
    assert sent(fake) == {"stop": "@daily", "timezone": "UTC"}
    assert only_stop.start is None and only_stop.stop == "@daily"

    assert [s.id for s in client.schedules.list("dev")] == [1]
    assert [(s.instance, s.id) for s in client.schedules.list()] == [("dev", 1), ("other", 2)]
    assert [s.id for s in client.instances.get("dev").schedules] == [1]

    assert client.schedules.remove("dev", 1) is None
    assert fake.requests[-1].method == "DELETE" and fake.requests[-1].path == "/v1/instances/dev/schedules/1"
    assert client.schedules.list("dev") == []
    assert client.instances.get("dev").schedules == []


@pytest.mark.parametrize("kwargs,match", [
    ({"stop": "0 19 * *", "timezone": "UTC"}, "not a cron expression"),
    ({"start": "tomorrow", "timezone": "UTC"}, "not a cron expression"),
    ({"stop": "@daily", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"stop": "@daily", "timezone": "Local"}, "unknown time zone"),
])
def test_schedule_refusals_from_the_daemon_store_nothing(policy, client, kwargs, match):
    with pytest.raises(labvm.InvalidArgument, match=match):
        client.schedules.add("dev", **kwargs)
    assert client.schedules.list("dev") == []


@pytest.mark.parametrize("kwargs,match", [
    ({"timezone": "UTC"}, "needs stop, start or both"),
    ({"stop": "@daily"}, "timezone is required"),
])
def test_schedule_add_refuses_before_sending(fake, policy, client, kwargs, match):
    with pytest.raises(labvm.InvalidArgument, match=match) as ei:
        client.schedules.add("dev", **kwargs)
    assert ei.value.hint
    assert fake.requests == []


def test_schedule_not_found_and_limit(policy, client):
    with pytest.raises(labvm.NotFound, match="no schedule 7") as ei:
        client.schedules.remove("dev", 7)
    assert "schedule list dev" in ei.value.hint
    with pytest.raises(labvm.NotFound):
        client.schedules.list("nope")
    with pytest.raises(labvm.NotFound):
        client.schedules.add("nope", stop="@daily", timezone="UTC")
    for _ in range(16):
        client.schedules.add("dev", stop="@daily", timezone="UTC")
    with pytest.raises(labvm.Conflict, match="16 schedules"):
        client.schedules.add("dev", stop="@daily", timezone="UTC")
    assert len(client.schedules.list("dev")) == 16


# -- the familiar layer ---------------------------------------------------------------------


def test_provisioning_configuration_idle_minutes_and_datasets(fake, policy, client, datadir):
    client.datasets.add("imagenet", datadir)
    cfg = labvm.ComputeInstance.provisioning_configuration(
        vm_size="Standard_B1s", image="tiny", idle_time_before_shutdown_minutes=45, datasets=["imagenet"])
    assert (cfg.idle_shutdown, cfg.datasets) == ("45m", ("imagenet",))
    inst = labvm.ComputeInstance.create("gpu", cfg, client=client)
    assert sent(fake) == {"name": "gpu", "size": "Standard_B1s", "image": "tiny",
                          "datasets": ["imagenet"], "idle_shutdown": "45m"}
    assert inst.idle_time_before_shutdown_minutes == 45


@pytest.mark.parametrize("minutes", [0, -5, 1.5, "30", True])
def test_provisioning_configuration_refuses_bad_idle_minutes(minutes):
    with pytest.raises(labvm.InvalidArgument, match="idle_time_before_shutdown_minutes"):
        labvm.ComputeInstance.provisioning_configuration(vm_size="Standard_B1s", idle_time_before_shutdown_minutes=minutes)


def test_compute_instance_idle_and_schedules(fake, policy, client):
    inst = labvm.ComputeInstance("dev", client=client)
    assert inst.idle_time_before_shutdown_minutes is None
    inst.set_idle_time_before_shutdown(120)
    assert sent(fake) == {"idle_shutdown": "120m"}
    assert inst.idle_time_before_shutdown_minutes == 120
    inst.set_idle_time_before_shutdown(None)
    assert inst.idle_time_before_shutdown_minutes is None
    with pytest.raises(labvm.InvalidArgument):
        inst.set_idle_time_before_shutdown(0)

    sc = inst.add_schedule(stop="0 19 * * 1-5")
    assert sent(fake) == {"stop": "0 19 * * 1-5", "timezone": "UTC"}
    second = inst.add_schedule(start="0 8 * * 1-5", timezone="Europe/Lisbon")
    assert [s.id for s in inst.schedules()] == [sc.id, second.id]
    inst.remove_schedule(sc)
    inst.remove_schedule(second.id)
    assert inst.schedules() == []
