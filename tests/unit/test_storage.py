import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import StorageError


def test_plain_paths_and_file_uris_are_the_same_location(tmp_path):
    assert storage.parse(str(tmp_path)) == storage.parse(f"file://{tmp_path}")


def test_a_nul_byte_in_a_path_is_a_storage_error_naming_the_uri():
    # Found by the spec contract test: `file://%00` reached realpath and raised a bare ValueError.
    for uri in ("file://%00", "file:///data/a%00b", "/data/a\x00b"):
        with pytest.raises(StorageError, match="NUL byte"):
            storage.parse(uri)


def test_unknown_scheme_is_named():
    with pytest.raises(StorageError, match="gs://x/y: unsupported URI scheme 'gs'"):
        storage.parse("gs://x/y")


def test_directory_round_trip_through_s3_writes_the_manifest_last(tmp_path, s3_bucket):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "manifest.json").write_text("{}")
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("b")
    written = storage.upload_dir(source, f"s3://{s3_bucket}/run")
    assert written[-1] == f"s3://{s3_bucket}/run/manifest.json"
    assert storage.exists(f"s3://{s3_bucket}/run/sub/b.txt")
    back = storage.download_dir(f"s3://{s3_bucket}/run", tmp_path / "back")
    assert storage.sha256_tree(back) == storage.sha256_tree(source)
    assert (back / "manifest.json").read_text() == "{}"


def test_local_writes_are_atomic_and_create_parents(tmp_path):
    target = f"file://{tmp_path}/deep/er/x.json"
    storage.write_text(target, "hello")
    assert storage.read_text(target) == "hello"
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["x.json"]


def test_missing_file_is_a_storage_error_naming_it(tmp_path):
    with pytest.raises(StorageError, match=r"nope\.txt"):
        storage.read_bytes(str(tmp_path / "nope.txt"))


def test_s3_streams_iterate_by_line_like_files(tmp_path, s3_bucket):
    lines = [f'{{"row": {n}, "text": "{"x" * 700}"}}\n'.encode() for n in range(5)]
    for uri in (f"s3://{s3_bucket}/rows.jsonl", f"file://{tmp_path}/rows.jsonl"):
        storage.write_bytes(uri, b"".join(lines))
        with storage.open_read(uri) as handle:
            assert list(handle) == lines, uri


def test_names_with_hash_and_question_mark_round_trip(tmp_path, s3_bucket):
    local = tmp_path / "run #1?" / "a.txt"
    storage.write_text(storage.join(f"file://{tmp_path}", "run #1?", "a.txt"), "x")
    assert local.read_text() == "x"
    (found,) = storage.list_files(f"file://{tmp_path}/run #1?")
    assert storage.read_text(found) == "x"
    assert storage.parse(local.as_uri()).path == str(local)
    key_uri = storage.join(f"s3://{s3_bucket}/p", "v1#final?.txt")
    storage.write_text(key_uri, "y")
    assert storage.parse(key_uri).path == "p/v1#final?.txt"
    assert storage.list_files(f"s3://{s3_bucket}/p") == [key_uri]


@pytest.mark.parametrize("root", ["file:///srv/out", "s3://bucket/out"])
@pytest.mark.parametrize("part", ["..", "../x", "a/../../x", "/../x"])  # refused input
def test_a_part_that_climbs_out_of_its_root_is_refused(root, part):
    with pytest.raises(StorageError, match="would leave this location"):
        storage.join(root, part)
    assert storage.join(root, "a..b", "x") == f"{root}/a..b/x"


def test_an_s3_key_with_dot_dot_is_not_downloaded_outside_the_target(tmp_path, s3_bucket):
    import boto3

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="model/../../../escaped.txt", Body=b"x")
    with pytest.raises(StorageError, match="outside"):
        storage.download_dir(f"s3://{s3_bucket}/model", tmp_path / "a" / "b" / "target")
    assert not list(tmp_path.rglob("escaped.txt"))
