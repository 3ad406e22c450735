"""The synced folders of an instance's buckets (``backends/objectmounts.py``) against a
real S3 server reached through a relay the tests cut and restore."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demanager import errors
from demanager.backends.base import LaunchSpec
from demanager.backends.objectmounts import HostMounts
from demanager.catalog import load_catalog
from demanager.domain.instance import WORK_DIR, Location, Storage
from demanager.objectstore.access import BucketLookup, ObjectAccess
from demanager.objectstore.options import S3Options
from tests.backends.conformance.harness import CATALOG, FLAVOR, PROFILE
from tests.s3server import MotoServer, Relay

PROJECT = "proj-a"


class Grants:
    """Bucket grants kept in a dict: the store's table in ``store/objectaccess.py`` is
    tested on its own; here only which project a bucket belongs to matters."""

    def __init__(self, **granted: str) -> None:
        self.granted = granted

    async def lookup(self, project_id: str, bucket: str) -> BucketLookup:
        return BucketLookup(project_keys=None, granted_to=self.granted.get(bucket))


@pytest.fixture
def relay(moto: MotoServer) -> Iterator[Relay]:
    relay = Relay(moto.port).restore()
    yield relay
    relay.cut()


def _access(moto: MotoServer, endpoint: str, grants: Grants) -> ObjectAccess:
    options = S3Options.model_validate(
        {
            "endpoint_url": endpoint,
            "access_key_id": moto.access_key,
            "secret_access_key": moto.secret_key,
        }
    )
    return ObjectAccess(options, grants)


def _spec(storage: Storage, *extend: Storage) -> LaunchSpec:
    catalog = load_catalog(CATALOG)
    return LaunchSpec(
        instance_id=f"inst-{time.monotonic_ns()}",
        project_id=PROJECT,
        profile=catalog.profiles[PROFILE],
        flavor=catalog.flavors[FLAVOR],
        storage=storage,
        extend_storage=extend,
        now_ms=int(time.time() * 1000),
    )


def _obs(bucket: str, path: str = "work") -> Storage:
    return Storage("obs", Location(path=f"/{bucket}/{path}/"))


def _obsfs(bucket: str, mount: str, modes: str) -> Storage:
    return Storage(
        "obsfs", Location(path=bucket, mount_path=f"{WORK_DIR}/{mount}", access_modes=modes)
    )


def test_down_up_and_read_only(moto: MotoServer, relay: Relay, tmp_path: Path) -> None:
    work, shared = moto.new_bucket(), moto.new_bucket()
    s3 = moto.client()
    s3.put_object(Bucket=work, Key="work/in.txt", Body=b"from the bucket")
    s3.put_object(Bucket=shared, Key="ref/data.csv", Body=b"a,b")
    mounts = HostMounts(tmp_path, _access(moto, relay.endpoint, Grants(**{work: PROJECT,
                                                                             shared: PROJECT})))
    spec = _spec(_obs(work), _obsfs(shared, "ref", "ReadOnlyMany"))

    async def scenario() -> None:
        prepared = await mounts.prepare(spec, None)
        folders = {p.mount.name: p.folder for p in prepared}
        assert (folders["work"] / "in.txt").read_bytes() == b"from the bucket"
        ref = folders["mount-0"]
        assert (ref / "ref" / "data.csv").read_bytes() == b"a,b"
        if os.geteuid() != 0:
            # Without root, the read-only copy has no write bit left.
            assert not (ref / "ref").stat().st_mode & stat.S_IWUSR
        else:
            assert (ref / "ref").stat().st_uid == 0
        (folders["work"] / "out.txt").write_bytes(b"from the notebook")
        await mounts.finish(spec.instance_id)
        await mounts.remove(spec.instance_id)

    asyncio.run(scenario())
    assert s3.get_object(Bucket=work, Key="work/out.txt")["Body"].read() == b"from the notebook"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=shared)["Contents"]}
    assert keys == {"ref/data.csv"}
    assert not (tmp_path / spec.instance_id).exists(), "delete removes the synced copies"


def test_a_bucket_of_another_project_fails_the_start(
    moto: MotoServer, relay: Relay, tmp_path: Path
) -> None:
    theirs = moto.new_bucket()
    mounts = HostMounts(tmp_path, _access(moto, relay.endpoint, Grants(**{theirs: "proj-b"})))
    with pytest.raises(errors.PermanentBackendError) as failed:
        asyncio.run(mounts.prepare(_spec(_obs(theirs)), None))
    assert failed.value.code == "ModelArts.6320"
    assert "another project" in failed.value.message


def test_an_outage_is_retried_reported_and_nothing_is_lost(
    moto: MotoServer, relay: Relay, tmp_path: Path
) -> None:
    work = moto.new_bucket()
    mounts = HostMounts(
        tmp_path, _access(moto, relay.endpoint, Grants(**{work: PROJECT})), interval=0.2
    )
    spec = _spec(_obs(work))

    async def scenario() -> None:
        folder = (await mounts.prepare(spec, None))[0].folder
        mounts.start()
        relay.cut()
        (folder / "during.txt").write_text("written while the store was away")
        await _until(lambda: mounts.warning(spec.instance_id) is not None)
        away = mounts.warning(spec.instance_id)
        assert away is not None and "failing since" in away.message
        # A stop while the store is away still stops; the copy stays, to be synced.
        await mounts.finish(spec.instance_id)
        assert (folder / "during.txt").exists()
        relay.restore()
        await _until(lambda: "unreachable from" in _message(mounts, spec.instance_id), 30)
        await mounts.stop()

    asyncio.run(scenario())
    body = moto.client().get_object(Bucket=work, Key="work/during.txt")["Body"].read()
    assert body == b"written while the store was away"


def _message(mounts: HostMounts, instance_id: str) -> str:
    warning = mounts.warning(instance_id)
    return warning.message if warning else ""


async def _until(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
