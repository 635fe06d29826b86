"""Nothing that runs from the repository reads a path outside it.

A clone has no `../shared`, no `/work/...` and nobody's home directory, so the tests, benches,
examples (the demo among them), the Makefile and CI scripts may reach only paths under the
repository root, the working directory they are given, or temporary directories. The scan is
textual and runs over every tracked file of those kinds: a computed path that climbs out
(`Path(__file__).parents[N]` past the root, a `".."` segment) is caught as well as a literal one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests/", "bench/", "examples/", ".ci/", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".jsonl", ".sh", ".toml", ".cfg", ".ini", ""}

# Each: what it catches, and the pattern. Strings that tests hand to a validator as bad input
# ("s3://models/../secrets") are not reads, so `..` counts only as a path segment of its own, and a
# line that ends in REFUSED (a path a test expects to be refused) is not scanned.
OUTSIDE = [
    ("a folder named shared beside or above the checkout", re.compile(r"""(?:\.\./|["'/])shared(?:["'/]|$)""")),
    ("an absolute path on this machine's layout", re.compile(r"""(?<![\w.:/])/(?:work|home|root|Users|mnt)/""")),
    ("the repository's parent folder", re.compile(r"\bROOT\.parents?\b")),
    ("the user's home directory", re.compile(r"Path\.home\(\)|expanduser\(|\$HOME\b|~/")),
    ("a '..' path segment", re.compile(r"""/\s*["']\.\.["']|os\.pardir|["']\.\./""")),
]
REFUSED = "# refused input"
# The per-machine build cache (tests/machine_cache.py, ~/.cache/kubetune/...) is written, never read as
# input: that module may name the home directory, and comments may say where the cache lies.
MACHINE_CACHE = "tests/machine_cache.py"
CACHE_MENTION = re.compile(r"(?:~|\$XDG_CACHE_HOME)/(?:\.cache/)?kubetune/")
FILE_ANCESTOR = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?(?:\.parents\[(\d+)\]|((?:\.parent)+))")


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *SCANNED], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    return [
        ROOT / name
        for name in listed
        if name and name not in (this, MACHINE_CACHE) and Path(name).suffix in TEXT_SUFFIXES and (ROOT / name).is_file()
    ]


def escapes(relative: Path, text: str) -> list[str]:
    """'line N: why' for every place in `text` (the file at `relative`) that reaches outside the root."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.rstrip().endswith(REFUSED):
            continue
        for why, pattern in OUTSIDE:
            if pattern.search(CACHE_MENTION.sub("", line)):
                found.append(f"line {number}: {why}: {line.strip()}")
        for match in FILE_ANCESTOR.finditer(line):
            # parents[k] of a file k folders deep is the root itself; further up is outside.
            up = int(match[1]) if match[1] is not None else match[2].count(".parent") - 1
            if (beyond := up - (len(relative.parts) - 1)) > 0:
                found.append(f"line {number}: climbs {beyond} folder(s) above the repository: {line.strip()}")
    return found


def test_the_scan_sees_the_tests_benches_examples_and_makefile():
    names = {path.relative_to(ROOT).as_posix() for path in tracked_files()}
    assert {"Makefile", "tests/conftest.py", "examples/demo/make_inputs.py"} <= names
    assert any(name.startswith("bench/") for name in names)


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/conftest.py", 'DATA = ROOT.parent / "shared" / "data"'),
        ("tests/conftest.py", 'DATA = Path("../shared/data")'),
        ("tests/conftest.py", 'DATA = ROOT.parent / "samples"'),
        ("bench/x.py", 'open("/work/shared/notes/demo-on-intel.md")'),
        ("Makefile", "\tcp -r /home/me/data tests/"),
        ("bench/x.py", "cache = Path.home() / '.cache' / 'kubetune'"),
        ("tests/unit/x.py", 'ROOT = Path(__file__).resolve().parents[3]'),
        ("tests/x.py", "ROOT = Path(__file__).parent.parent.parent"),
        ("tests/x.py", 'ROOT / ".." / "data"'),
        ("examples/demo/make_inputs.py", 'base = "../models/base"'),
    ],
)
def test_the_scan_finds_a_read_outside_the_repository(relative, line):
    assert escapes(Path(relative), line)


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/conftest.py", 'ROOT = Path(__file__).resolve().parents[1]'),
        ("tests/unit/operator/api/test_crds.py", 'ROOT = Path(__file__).resolve().parents[4]'),
        ("tests/unit/x.py", '"dot-dot in URI": setter("spec.baseModel", "s3://models/../secrets")'),
        ("tests/unit/x.py", 'SAMPLE = ROOT / "tests" / "fixtures" / "data"'),
        ("examples/demo/01-datasets.yaml", "    - uri: file://./demo-artifacts/inputs/sft/repeats.jsonl"),
        ("tests/unit/x.py", 'assert status("s3://root/ns/x") == "s3://root/ns/x"'),
        ("tests/unit/x.py", f'(("--path", "../elsewhere"), "must be a relative directory"),  {REFUSED}'),
    ],
)
def test_the_scan_lets_paths_inside_the_repository_pass(relative, line):
    assert escapes(Path(relative), line) == []


def test_nothing_reads_a_path_outside_the_repository():
    offenders = {
        path.relative_to(ROOT).as_posix(): found
        for path in tracked_files()
        if (found := escapes(path.relative_to(ROOT), path.read_text(encoding="utf-8", errors="replace")))
    }
    assert offenders == {}
