"""A small blocking S3 client on boto3; callers on the event loop run it in a thread.

Every S3 fault a user can cause becomes ``ObjectStorageAccessError`` (6320) naming the
bucket and the reason. The credentials appear in no message and no log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from demanager import errors
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import relative_key
from demanager.objectstore.plan import RemoteEntry

SINGLE_PUT_BYTES = 64 * 1024 * 1024
"""Files up to this size are uploaded in one request, larger ones in parts."""
SINGLE_GET_BYTES = 8 * 1024 * 1024
"""Objects up to this size are downloaded in one request, larger ones in ranges; the
threshold boto3's transfer manager has for parts."""
_CHUNK_BYTES = 1024 * 1024

_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_MISSING_BUCKET = {"NoSuchBucket", "404"}


def _reason(bucket: str, exc: Exception) -> errors.ObjectStorageAccessError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_BUCKET:
            return errors.ObjectStorageAccessError(f"the bucket '{bucket}' does not exist.")
        if code in _REFUSED:
            return errors.ObjectStorageAccessError(
                f"access to the bucket '{bucket}' was refused (credentials or permission)."
            )
        return errors.ObjectStorageAccessError(f"the bucket '{bucket}' answered {code}.")
    # Connection faults: say what failed, not the endpoint's internals.
    return errors.ObjectStorageAccessError(
        f"the object storage could not be reached for the bucket '{bucket}'."
    )


class ObjectStore:
    def __init__(self, options: S3Options) -> None:
        if not options.has_credentials:
            raise errors.ObjectStorageCredentialsMissing()
        assert options.secret_access_key is not None  # has_credentials says so
        self._s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key.get_secret_value(),
            config=Config(
                s3={"addressing_style": options.addressing_style},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def check(self, bucket: str, prefix: str) -> None:
        """Raise 6320 unless the bucket exists and these credentials may list the prefix."""
        try:
            self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise _reason(bucket, exc) from None

    def list(self, bucket: str, prefix: str) -> dict[str, RemoteEntry]:
        """The files under ``prefix`` by relative path; keys no file can be made of
        (folder markers, ``..``) are left out."""
        found: dict[str, RemoteEntry] = {}
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = relative_key(prefix, obj["Key"])
                    if rel is not None:
                        found[rel] = RemoteEntry(etag=obj["ETag"], size=obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise _reason(bucket, exc) from None
        return found

    def download(self, bucket: str, key: str, target: Path, size: int | None = None) -> str:
        """Write the object to ``target`` (through a temporary file); its ETag.

        ``size``, the listing's, lets a small object come in one request."""
        partial = target.with_name(f".{target.name}.partial")
        try:
            if size is not None and size <= SINGLE_GET_BYTES:
                # A head and a transfer manager (which heads again) cost three round
                # trips and a thread pool per file, most of a small file's time. The
                # ETag is that of the bytes received, even if the object changed since.
                answer = self._s3.get_object(Bucket=bucket, Key=key)
                with partial.open("wb") as out:
                    for chunk in answer["Body"].iter_chunks(_CHUNK_BYTES):
                        out.write(chunk)
                etag = str(answer["ETag"])
            else:
                head = self._s3.head_object(Bucket=bucket, Key=key)
                self._s3.download_file(bucket, key, str(partial))
                etag = str(head["ETag"])
        except (ClientError, BotoCoreError) as exc:
            partial.unlink(missing_ok=True)
            raise _reason(bucket, exc) from None
        partial.replace(target)
        return etag

    def upload(self, bucket: str, key: str, body: BinaryIO, size: int) -> str:
        """Put the open file at ``key``; the new object's ETag. The caller opens the
        file, so that it decides which file is read (see ``sync.open_inside``)."""
        try:
            if size <= SINGLE_PUT_BYTES:
                # The answer's ETag is this upload's own: a head afterwards could
                # read another writer's object and record it as synced.
                return str(self._s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"])
            # Large files go in parts; the head after it may, rarely, see a newer
            # writer's object, which then merely counts as synced.
            self._s3.upload_fileobj(body, bucket, key)
            return str(self._s3.head_object(Bucket=bucket, Key=key)["ETag"])
        except (ClientError, BotoCoreError) as exc:
            raise _reason(bucket, exc) from None

    def copy(self, bucket: str, key: str, target_key: str) -> None:
        try:
            self._s3.copy_object(
                Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": key}
            )
        except (ClientError, BotoCoreError) as exc:
            raise _reason(bucket, exc) from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _reason(bucket, exc) from None
