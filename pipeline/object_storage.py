"""Object storage (s3://, gs://, ...) through fsspec: what goes wrong there, as one-line errors.

Stores on object storage work through the same code as local ones (zarr's fsspec store, fsspec for
listings). What differs is how they fail: a bucket that does not exist and credentials the server
refuses (a missing fsspec package is `pipeline.storage.filesystem`'s error). `pipeline.storage` calls
these helpers so that each is a `UserError` naming the location, the cause and the fix. Credentials and endpoints are never part of a message:
they come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL,
...) or fsspec's configuration, which this package never reads or records.
"""

from __future__ import annotations

import fsspec

from pipeline.errors import UserError

CREDENTIALS_HINT = {
    "s3": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and, for a server other than AWS, "
          "AWS_ENDPOINT_URL",
}


def scheme(location: str) -> str:
    return str(location).split("://", 1)[0] if "://" in str(location) else "file"


def access_denied(location: str, error: PermissionError) -> UserError:
    """The one-line error when the storage refuses the credentials (the error text never holds secrets)."""
    hint = CREDENTIALS_HINT.get(scheme(location), "check the credentials this storage uses")
    return UserError(f"{location}: access denied ({str(error).strip()[:160] or 'forbidden'}); {hint}")


def check_bucket(location: str, fs: fsspec.AbstractFileSystem, root: str, option: str) -> None:
    """For a bucket-based store (s3fs, gcsfs, ...): the bucket must exist before anything is written to it."""
    split = getattr(fs, "split_path", None)
    if split is None:
        return
    bucket = split(root)[0]
    try:
        found = fs.exists(bucket)
    except PermissionError as error:
        raise access_denied(location, error) from None
    if not found:
        raise UserError(f"{option} {location}: bucket {bucket!r} does not exist (or these credentials cannot see "
                        f"it); create it first (e.g. `aws s3 mb {scheme(location)}://{bucket}`) or fix the URL")
