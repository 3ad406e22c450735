"""Which keys reach a project's bucket: ``objectstore.access.options_for``, each branch."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from demanager import errors
from demanager.objectstore.access import BucketLookup, ObjectAccess, ProjectKeys, options_for
from demanager.objectstore.options import S3Options
from demanager.schemas.errors import lookup

DEPLOYMENT = S3Options(
    endpoint_url="https://obs.example.test", region="eu-de", access_key_id="DEPLOYAK",
    secret_access_key=SecretStr("deploy-secret"), addressing_style="virtual",
)
NO_KEYS = DEPLOYMENT.model_copy(update={"access_key_id": None, "secret_access_key": None})
OWN = ProjectKeys("PROJECTAK", SecretStr("project-secret"))


@pytest.mark.parametrize("deployment", [DEPLOYMENT, NO_KEYS])
@pytest.mark.parametrize("granted_to", [None, "p", "other"])
def test_the_project_s_own_keys_serve_every_bucket(
    deployment: S3Options, granted_to: str | None
) -> None:
    """The store's policy decides what they reach; the grants are not asked."""
    got = options_for(deployment, "p", "bucket", BucketLookup(OWN, granted_to))
    assert got == deployment.model_copy(update={
        "access_key_id": "PROJECTAK", "secret_access_key": OWN.secret_access_key})
    assert (got.endpoint_url, got.region, got.addressing_style) == (
        "https://obs.example.test", "eu-de", "virtual")


@pytest.mark.parametrize("granted_to", [None, "p"])
def test_no_keys_anywhere_is_6319(granted_to: str | None) -> None:
    with pytest.raises(errors.ObjectStorageCredentialsMissing) as refused:
        options_for(NO_KEYS, "p", "bucket", BucketLookup(None, granted_to))
    assert lookup(refused.value) == (400, "ModelArts.6319")


def test_a_bucket_granted_to_nobody_is_6320() -> None:
    with pytest.raises(errors.ObjectStorageAccessError) as refused:
        options_for(DEPLOYMENT, "p", "bucket", BucketLookup(None, None))
    assert lookup(refused.value) == (400, "ModelArts.6320")
    assert refused.value.detail == "the bucket 'bucket' is not granted to this project."


def test_another_project_s_bucket_is_6320_without_naming_that_project() -> None:
    with pytest.raises(errors.ObjectStorageAccessError) as refused:
        options_for(DEPLOYMENT, "p", "bucket", BucketLookup(None, "secret-project"))
    assert lookup(refused.value) == (400, "ModelArts.6320")
    assert refused.value.detail == "the bucket 'bucket' belongs to another project."
    assert "secret-project" not in refused.value.message


def test_a_granted_bucket_gets_the_deployment_s_options() -> None:
    assert options_for(DEPLOYMENT, "p", "bucket", BucketLookup(None, "p")) is DEPLOYMENT


def test_project_keys_never_show_their_secret() -> None:
    assert "project-secret" not in repr(OWN) + str(OWN) + repr(BucketLookup(OWN, "p"))


async def test_without_a_directory_nothing_is_granted() -> None:
    with pytest.raises(errors.ObjectStorageAccessError):
        await ObjectAccess(DEPLOYMENT, None).options_for("p", "bucket")
    with pytest.raises(errors.ObjectStorageCredentialsMissing):
        await ObjectAccess(NO_KEYS, None).options_for("p", "bucket")
