"""The Hub protocol helpers shared by the mirror and the test hub: ranges, paths, listings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from models_catalog.mirror import protocol
from models_catalog.mirror.protocol import ByteRange, RepoFile, Unsatisfiable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-", ByteRange(100, 1000)),
        ("bytes=-10", ByteRange(990, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),  # a suffix longer than the file: all of it
        ("bytes=900-5000", ByteRange(900, 1000)),  # clipped to the end
        ("bytes=999-999", ByteRange(999, 1000)),
        (None, None),
        ("", None),
        ("bytes=5-1", None),  # last < first: ignored
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header, expected):
    assert protocol.parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_ranges_past_the_end_are_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        protocol.parse_range(header, 1000)


def test_if_range_must_name_this_version():
    assert protocol.parse_range("bytes=5-", 10, if_range='"abc"', etag="abc") == ByteRange(5, 10)
    assert protocol.parse_range("bytes=5-", 10, if_range='"old"', etag="abc") is None


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a\x00b", "a/", "x\n"],
)
def test_unsafe_paths_are_refused(path):
    assert protocol.clean_path(path) is None


def test_safe_paths_pass():
    assert protocol.clean_path("onnx/model.onnx") == "onnx/model.onnx"
    assert protocol.clean_path("..hidden") == "..hidden"


def test_repo_ids():
    assert protocol.valid_repo_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert protocol.valid_repo_id("gpt2")
    for bad in ("a/b/c", "../x", "a/..", "-a/b", "a/b c", "a--b/c", ""):
        assert not protocol.valid_repo_id(bad), bad


def test_split_revision_prefers_known_revisions_with_slashes():
    known = ["main", "refs/pr/1"]
    assert protocol.split_revision("refs/pr/1/config.json", known) == ("refs/pr/1", "config.json")
    assert protocol.split_revision("main/a/b.txt", known) == ("main", "a/b.txt")
    assert protocol.split_revision("v2/a.txt", known) == ("v2", "a.txt")
    assert protocol.split_revision("main", known) == ("main", "")


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert protocol.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_file_digests_reads_once(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    size, sha256, sha1 = protocol.file_digests(path)
    assert size == 3_000_000
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha1 == protocol.git_blob_sha1(path.read_bytes())


def _file(path: str, lfs: bool = False) -> RepoFile:
    return RepoFile(path, 10, "a" * 64, "b" * 40, lfs)


def test_tree_lists_directories_and_files():
    files = [_file("config.json"), _file("onnx/model.onnx", lfs=True), _file("onnx/q/m.onnx")]
    top = protocol.tree(files, "", recursive=False)
    assert top is not None
    assert [(e["type"], e["path"]) for e in top] == [("file", "config.json"), ("directory", "onnx")]
    everything = protocol.tree(files, "", recursive=True)
    assert everything is not None
    assert [e["path"] for e in everything] == [
        "config.json",
        "onnx",
        "onnx/model.onnx",
        "onnx/q",
        "onnx/q/m.onnx",
    ]
    inside = protocol.tree(files, "onnx", recursive=False)
    assert inside is not None
    assert [e["path"] for e in inside] == ["onnx/model.onnx", "onnx/q"]
    assert inside[0]["lfs"] == {"oid": "a" * 64, "size": 10, "pointerSize": 127}
    assert protocol.tree(files, "nothing", recursive=True) is None


def test_pages_link_with_a_cursor():
    entries = [{"path": str(n)} for n in range(5)]
    first, cursor = protocol.page(entries, None, 2)
    second, cursor2 = protocol.page(entries, cursor, 2)
    third, end = protocol.page(entries, cursor2, 2)
    assert [first, second, third, end] == [entries[:2], entries[2:4], entries[4:], None]
    assert protocol.page(entries, "garbage!", 2)[0] == entries[:2]


def test_lfs_pointer_and_timestamp():
    pointer = protocol.lfs_pointer("a" * 64, 10)
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert protocol.timestamp(moment) == "2026-01-02T03:04:05.678Z"
