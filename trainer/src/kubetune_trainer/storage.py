"""One place for every artifact URI: `file://` (and plain paths) for local runs, `s3://` in clusters.

S3 goes through boto3's standard credential chain (env, IRSA web identity, instance profile);
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` point it at an S3-compatible store such as MinIO.
Writers that publish a directory write its manifest last, so a reader that finds the manifest
finds every file it names.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from kubetune_trainer.errors import StorageError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Location:
    scheme: str  # "file" or "s3"
    bucket: str  # empty for file
    path: str  # absolute path for file, key (no leading slash) for s3

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}"
        return f"file://{self.path}"


def _local_path(path: str, uri: str) -> str:
    # No file system takes a NUL byte in a name; Python would raise a bare ValueError deep in realpath.
    if "\x00" in path:
        raise StorageError(f"{uri!r}: a path cannot hold a NUL byte (%00)")
    return str(Path(path).expanduser().resolve())


def parse(uri: str | os.PathLike) -> Location:
    """A URI (or plain path) as a Location.

    No URL parsing beyond the scheme: `#` and `?` are ordinary characters of file names and S3 keys,
    so a URI built by `join` or `list_files` from any name parses back to that name. Percent-escapes
    in file URIs (as `Path.as_uri()` writes them) are decoded; S3 keys are taken literally.
    """
    text = os.fspath(uri)
    if "://" not in text:
        return Location("file", "", _local_path(text, text))
    scheme, rest = text.split("://", 1)
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return Location("file", "", _local_path(unquote(rest), text))
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StorageError(f"{text}: an s3:// URI needs a bucket (s3://BUCKET/KEY)")
        return Location("s3", bucket, key.lstrip("/"))
    raise StorageError(f"{text}: unsupported URI scheme {scheme!r} (use file:// or s3://)")


def join(uri: str, *parts: str) -> str:
    """`uri`/parts...; a part that would climb out of `uri` (a `..` segment) is refused, so that no
    name from a config or a listing reaches a path outside the root it was meant for."""
    loc = parse(uri)
    tail = "/".join(p.strip("/") for p in parts if p)
    if ".." in tail.split("/"):
        raise StorageError(f"{uri}: {tail!r} would leave this location ('..' is not allowed)")
    if loc.scheme == "s3":
        key = f"{loc.path.rstrip('/')}/{tail}" if loc.path else tail
        return f"s3://{loc.bucket}/{key}"
    return f"file://{Path(loc.path, tail)}"


def is_remote(uri: str) -> bool:
    return parse(uri).scheme == "s3"


def local_path(uri: str) -> Path:
    loc = parse(uri)
    if loc.scheme != "file":
        raise StorageError(f"{uri}: not a local path")
    return Path(loc.path)


@cache
def _s3():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def reset_clients() -> None:
    """Forget the cached S3 client, so that changed AWS_* variables take effect."""
    _s3.cache_clear()


def _s3_error(uri: str, exc: Exception) -> StorageError:
    return StorageError(f"{uri}: {exc}")


def exists(uri: str) -> bool:
    loc = parse(uri)
    if loc.scheme == "file":
        return Path(loc.path).exists()
    from botocore.exceptions import ClientError

    try:
        _s3().head_object(Bucket=loc.bucket, Key=loc.path)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return bool(list_files(uri, limit=1))
        raise _s3_error(uri, exc) from exc


def read_bytes(uri: str) -> bytes:
    loc = parse(uri)
    if loc.scheme == "file":
        try:
            return Path(loc.path).read_bytes()
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror or exc}") from exc
    try:
        return _s3().get_object(Bucket=loc.bucket, Key=loc.path)["Body"].read()
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


class _S3Body(io.RawIOBase):
    """An S3 object body as a raw stream: buffered, it iterates by line like a file (botocore's
    own iteration yields fixed-size chunks)."""

    def __init__(self, body) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream that iterates by line; S3 objects stream without being held in memory."""
    loc = parse(uri)
    if loc.scheme == "file":
        try:
            handle = open(loc.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror or exc}") from exc
        with handle:
            yield handle
        return
    try:
        body = _s3().get_object(Bucket=loc.bucket, Key=loc.path)["Body"]
    except Exception as exc:
        raise _s3_error(uri, exc) from exc
    try:
        yield io.BufferedReader(_S3Body(body), CHUNK)
    finally:
        body.close()


def write_bytes(uri: str, data: bytes) -> None:
    loc = parse(uri)
    if loc.scheme == "file":
        target = Path(loc.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so that no reader sees half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
        return
    try:
        _s3().put_object(Bucket=loc.bucket, Key=loc.path, Body=data)
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def upload_file(local: Path, uri: str) -> None:
    loc = parse(uri)
    if loc.scheme == "file":
        target = Path(loc.path)
        if target.resolve() == Path(local).resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        return
    try:
        _s3().upload_file(str(local), loc.bucket, loc.path)
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


def download_file(uri: str, local: Path) -> Path:
    loc = parse(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if loc.scheme == "file":
        try:
            shutil.copyfile(loc.path, local)
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror or exc}") from exc
        return local
    try:
        _s3().download_file(loc.bucket, loc.path, str(local))
    except Exception as exc:
        raise _s3_error(uri, exc) from exc
    return local


def list_files(uri: str, limit: int | None = None) -> list[str]:
    """Every file below a directory URI, as URIs, sorted."""
    loc = parse(uri)
    if loc.scheme == "file":
        root = Path(loc.path)
        if root.is_file():
            return [f"file://{root}"]
        if not root.exists():
            return []
        found = sorted(f"file://{p}" for p in root.rglob("*") if p.is_file())
        return found[:limit] if limit else found
    found: list[str] = []
    for item in _s3_objects(uri):
        found.append(f"s3://{loc.bucket}/{item['Key']}")
        if limit and len(found) >= limit:
            return found
    return sorted(found)


def _s3_objects(uri: str) -> Iterator[dict]:
    """The listing entries (Key, ETag, Size, ...) of every object below an s3:// directory URI."""
    loc = parse(uri)
    prefix = loc.path.rstrip("/") + "/" if loc.path else ""
    try:
        for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            yield from page.get("Contents", [])
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


def s3_version(uri: str) -> str | None:
    """A short hash of every object under an s3:// prefix: key, ETag and size, from one listing;
    None when nothing is there.

    Weights overwritten under the same key keep the URI but not the ETag, so a copy cached under
    this hash is never mistaken for the new weights.
    """
    digest = hashlib.sha256()
    listed = 0
    for item in _s3_objects(uri):
        digest.update(f"{item['Key']}\t{item['ETag']}\t{item['Size']}\n".encode())
        listed += 1
    return digest.hexdigest()[:16] if listed else None


def relative(root_uri: str, uri: str) -> str:
    root = parse(root_uri)
    loc = parse(uri)
    return loc.path[len(root.path.rstrip("/")) :].lstrip("/")


def upload_dir(local_dir: Path, uri: str, last: tuple[str, ...] = ("manifest.json",)) -> list[str]:
    """Copy a directory tree to `uri`; the files named in `last` go after all others."""
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    ordered = [p for p in files if p.name not in last] + [p for p in files if p.name in last]
    written = []
    for path in ordered:
        target = join(uri, path.relative_to(local_dir).as_posix())
        upload_file(path, target)
        written.append(target)
    return written


def download_dir(uri: str, local_dir: Path) -> Path:
    local_dir = Path(local_dir)
    loc = parse(uri)
    if loc.scheme == "file":
        source = Path(loc.path)
        if not source.is_dir():
            raise StorageError(f"{uri}: no such directory")
        if source.resolve() != local_dir.resolve():
            shutil.copytree(source, local_dir, dirs_exist_ok=True)
        return local_dir
    files = list_files(uri)
    if not files:
        raise StorageError(f"{uri}: no objects under this prefix")
    root = local_dir.resolve()
    for file_uri in files:
        # S3 keys may hold `..`: such an object must not land outside the target directory.
        target = local_dir / relative(uri, file_uri)
        if not target.resolve().is_relative_to(root):
            raise StorageError(f"{file_uri}: its key would be written outside {local_dir}")
        download_file(file_uri, target)
    return local_dir


def delete_file(uri: str) -> None:
    """Remove one file or object; a missing one is not an error."""
    loc = parse(uri)
    if loc.scheme == "file":
        Path(loc.path).unlink(missing_ok=True)
        return
    try:
        _s3().delete_object(Bucket=loc.bucket, Key=loc.path)
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


def delete_tree(uri: str) -> None:
    loc = parse(uri)
    if loc.scheme == "file":
        shutil.rmtree(loc.path, ignore_errors=True)
        return
    for file_uri in list_files(uri):
        item = parse(file_uri)
        try:
            _s3().delete_object(Bucket=item.bucket, Key=item.path)
        except Exception as exc:
            raise _s3_error(file_uri, exc) from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(local_dir: Path, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """sha256 of every file below a directory, keyed by its POSIX relative path."""
    local_dir = Path(local_dir)
    return {
        p.relative_to(local_dir).as_posix(): sha256_file(p)
        for p in sorted(local_dir.rglob("*"))
        if p.is_file() and p.name not in skip
    }
