"""Resource YAML is read as the API server receives it: YAML 1.2 scalars, JSON values, no duplicate
keys, aliases within a budget, bounded nesting; every refusal names file, line and column."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune_operator.cli.documents import load_documents
from kubetune_operator.errors import ValidationFailed
from kubetune_operator.yaml12 import ALIAS_BUDGET, MAX_DEPTH, load_all

# YAML 1.1 (PyYAML) reads several of these otherwise: 1e-4 as a string, yes as true, 0777 as 511.
SCALARS = {
    "1e-4": 1e-4, "1.5e3": 1500.0, "-2.": -2.0, ".5": 0.5, "10": 10, "-7": -7, "0777": 777, "0o17": 15,
    "0x1F": 31, "true": True, "False": False, "TRUE": True, "yes": "yes", "on": "on", "~": None, "null": None,
    "2024-01-01": "2024-01-01", "1_000": "1_000", "1:30": "1:30", "'1e-4'": "1e-4", '"true"': "true",
    "!!str 10": "10", "!!float 1": 1.0, "!!int 7": 7,
}


@pytest.mark.parametrize("written, value", SCALARS.items(), ids=SCALARS.keys())
def test_scalars_resolve_by_the_yaml_1_2_core_schema(written, value):
    [(_, document)] = list(load_all(f"a: {written}\n"))
    assert document == {"a": value} and type(document["a"]) is type(value)


REFUSED = {
    "duplicate key": ("a: 1\nb:\n  c: 2\n  c: 3\n", 4, 3, "key 'c' appears twice in one mapping (first on line 3)"),
    "NaN": ("a: .nan\n", 1, 4, ".nan is not a number a resource can hold"),
    "infinity": ("a:\n  - -.Inf\n", 2, 5, "-.Inf is not a number a resource can hold"),
    "out of range": ("a: 1e400\n", 1, 4, "1e400 is out of range for a number"),
    "alias to an enclosing node": ("a: &x [1, *x]\n", 1, 11, "alias *x names no anchor before it"),
    "undefined alias": ("a: *nope\n", 1, 4, "alias *nope names no anchor before it"),
    "python tag": ("a: !!python/object/apply:os.system [id]\n", 1, 4, "tag tag:yaml.org,2002:python/object/apply:os.system is not allowed"),
    "binary": ("a: !!binary aGk=\n", 1, 4, "tag tag:yaml.org,2002:binary is not allowed"),
    "set": ("a: !!set {x: null}\n", 1, 4, "tag tag:yaml.org,2002:set is not allowed"),
    "mapping as key": ("? [a]\n: 1\n", 1, 3, "a mapping key must be a scalar"),
    "alias as key": ("x: &k a\n*k : 1\n", 2, 1, "a mapping key must be written out"),
    "int tag on a float": ("a: !!int 7.5\n", 1, 4, "'7.5' is not an int"),
    "merge of a scalar": ("a: &s 1\nb:\n  <<: *s\n", 3, 7, "a merge key (<<) takes a mapping"),
}


@pytest.mark.parametrize("text, line, column, message", REFUSED.values(), ids=REFUSED.keys())
def test_what_json_or_the_api_server_cannot_hold_is_refused_with_line_and_column(text, line, column, message, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ValidationFailed) as raised:
        load_documents([path])
    assert str(raised.value).startswith(f"{path}:{line}:{column}: {message}"), str(raised.value)


def test_aliases_and_merge_keys_within_the_budget_are_copies():
    text = "common: &c {nodes: 1, gpus: 2}\na: *c\nb:\n  <<: *c\n  gpus: 4\n"
    [(_, document)] = list(load_all(text))
    assert document == {"common": {"nodes": 1, "gpus": 2}, "a": {"nodes": 1, "gpus": 2}, "b": {"nodes": 1, "gpus": 4}}
    document["a"]["nodes"] = 9
    assert document["common"]["nodes"] == 1


def test_aliases_expanding_past_the_budget_are_refused_before_they_expand(tmp_path):
    # Nine levels of ten: a billion values from a few hundred bytes.
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationFailed, match=rf"laughs.yaml:4:\d+: aliases expand this document by more than {ALIAS_BUDGET}"):
        load_documents([path])


def test_deep_nesting_is_refused_not_a_crash(tmp_path):
    # libyaml's composer (PyYAML's C loader) recurses and crashes the interpreter on this.
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run([str(kubetune), "render", str(path)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr == f"kubetune render: error: {path}:1:{MAX_DEPTH + 3}: nested deeper than {MAX_DEPTH} levels\n"
    [(_, deepest)] = list(load_all("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)))
    assert deepest["a"]


def test_documents_keep_their_index_and_empty_ones_are_skipped(tmp_path):
    path = tmp_path / "multi.yaml"
    path.write_text("---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n")
    assert [(d.source, d.body) for d in load_documents([path])] == [(f"{path}#0", {"a": 1}), (f"{path}#3", {"b": 2})]


def test_a_learning_rate_written_as_1e_4_runs_as_kubectl_reads_it(tmp_path):
    text = Path(__file__).resolve().parents[3].joinpath("examples", "finetunejob.yaml").read_text()
    text = yaml.safe_dump(yaml.safe_load(text)).replace("learningRate: 0.0001", "learningRate: 1e-4")
    path = tmp_path / "ftj.yaml"
    path.write_text(text)
    assert "learningRate: 1e-4" in text
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run([str(kubetune), "render", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "learning_rate: 0.0001" in result.stdout
