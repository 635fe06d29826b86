"""`kubetune-trainer model tiny`: a base model for laptops; shapes that could not run are refused."""

import re

import pytest
from transformers import AutoConfig

from kubetune_trainer.cli import main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--heads", "3"], r"--hidden \(64\) / --heads \(3\) must be a whole, even head size"),
        (["--kv-heads", "3"], r"--kv-heads \(3\) must divide --heads \(4\)"),
        (["--layers", "0"], r"--layers: must be >= 1"),
    ],
)
def test_shapes_qwen2_cannot_run_are_refused(tmp_path, sample_data, capsys, extra, message):
    corpus = str(sample_data / "trl" / "preference.jsonl")
    assert main(["model", "tiny", "--corpus", corpus, "--output", str(tmp_path / "m"), *extra]) == 64
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_a_corpus_that_is_not_utf8_is_named(tmp_path, capsys):
    (tmp_path / "corpus.jsonl").write_bytes('{"text": "天气"}\n'.encode("gbk"))
    assert (
        main(["model", "tiny", "--corpus", str(tmp_path / "corpus.jsonl"), "--output", str(tmp_path / "m")])
        == 64
    )
    assert f"{tmp_path / 'corpus.jsonl'}: not UTF-8 text" in capsys.readouterr().err


def test_writes_a_model_that_loads(tmp_path, sample_data):
    corpus = str(sample_data / "trl" / "*.jsonl")
    assert main(["model", "tiny", "--corpus", corpus, "--output", str(tmp_path / "m"), "--layers", "1"]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "m").num_hidden_layers == 1
