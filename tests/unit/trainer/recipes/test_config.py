import json
from pathlib import Path

import pytest
import yaml

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes.config import TrainConfig, config_from_dict, load_config

REQUIRED = {
    "method": "sft",
    "base_model": "s3://models/qwen",
    "dataset": "s3://data/ds",
    "output": "s3://out/job",
}


def test_defaults_follow_the_contract():
    config = config_from_dict(REQUIRED)
    assert (config.peft, config.lora_r, config.lora_alpha, config.lora_dropout) == ("lora", 16, 32, 0.05)
    assert config.lora_target_modules == ["all-linear"]
    assert (config.learning_rate, config.num_train_epochs, config.max_steps) == (1e-4, 1.0, -1)
    assert (config.cutoff_len, config.lr_scheduler_type, config.seed) == (1024, "cosine", 42)
    assert (config.beta, config.loss_type, config.deepspeed_stage, config.precision) == (
        0.1,
        "sigmoid",
        0,
        "auto",
    )
    assert (config.save_steps, config.save_total_limit, config.logging_steps) == (100, 3, 10)
    assert config.eval_steps is None and config.eval_interval == 100
    assert config.completion_only_loss and not config.packing and not config.merge_final


def test_yaml_and_json_files_load_the_same(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "method: dpo\nbase_model: hf://Qwen/Qwen2-0.5B\ndataset: file:///d\noutput: /o\n"
        "learning_rate: 5e-6\nbeta: 0.2\nloss_type: ipo\n"
    )
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "method": "dpo",
                "base_model": "hf://Qwen/Qwen2-0.5B",
                "dataset": "file:///d",
                "output": "/o",
                "learning_rate": 5e-6,
                "beta": 0.2,
                "loss_type": "ipo",
            }
        )
    )
    from_yaml, from_json = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.json")
    assert from_yaml == from_json
    # YAML 1.1 reads 5e-6 as a string; the field still gets a float.
    assert from_yaml.learning_rate == 5e-6 and isinstance(from_yaml, TrainConfig)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lerning_rate": 1e-4}, "lerning_rate: unknown field"),
        ({"learning_rate": 0}, "learning_rate: Input should be greater than 0"),
        ({"learning_rate": "fast"}, "learning_rate: Input should be a valid number"),
        ({"method": "ppo"}, "method: Input should be 'sft', 'dpo', 'orpo', 'simpo' or 'kto'"),
        ({"loss_type": "kto"}, "loss_type: Input should be 'sigmoid', 'ipo', 'hinge', 'robust'"),
        ({"deepspeed_stage": 1}, "deepspeed_stage: Input should be 0, 2 or 3"),
        ({"max_steps": 0}, "max_steps: must be -1"),
        ({"lora_target_modules": []}, "lora_target_modules: List should have at least 1 item"),
        (
            {"key_token_patterns": ["判断", "(unclosed"]},
            "key_token_patterns[1]: '(unclosed' is not a regular expression",
        ),
        ({"lr_scheduler_type": "triangle"}, "lr_scheduler_type: must be one of"),
        ({"dataset": "hf://org/data"}, "dataset: hf:// is only allowed for base_model"),
        # The artifact store would refuse these later, as a StorageError (71), which is retried.
        ({"output": "gs://bucket/job"}, "output: gs://bucket/job: unsupported URI scheme 'gs'"),
        ({"start_from": "https://host/final"}, "start_from: https://host/final: unsupported URI scheme"),
        ({"dataset": "s3:///ds"}, "dataset: s3:///ds: an s3:// URI needs a bucket"),
        (
            {"base_model": "hf://"},
            "base_model: 'hf://' is not a URI (file://, s3://, hf://org/name or a path)",
        ),
        ({"offload_params": True, "deepspeed_stage": 2}, "offload_params: needs deepspeed_stage: 3"),
        ({"offload_optimizer": True}, "offload_optimizer: needs deepspeed_stage: 2 or 3"),
        ({"merge_final": True, "peft": "full"}, "merge_final: a full fine-tune is already a merged model"),
        ({"save_steps": 100, "eval_steps": 30}, "eval_steps: must divide save_steps (100)"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(REQUIRED | overrides, source="job.yaml")
    assert caught.value.message.startswith("job.yaml: ")
    assert message in caught.value.message


def test_missing_fields_are_all_named():
    with pytest.raises(ConfigError, match="base_model: required; dataset: required; output: required"):
        config_from_dict({"method": "sft"})


def test_files_that_are_not_configs_are_named(tmp_path):
    (tmp_path / "list.yaml").write_text("- method: sft\n")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match=r"list.yaml: must be a mapping of field: value, got list"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match=r"broken\.json:1: not valid JSON"):
        load_config(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the config \(No such file"):
        load_config(tmp_path / "missing.yaml")


def test_to_dict_round_trips():
    config = config_from_dict(REQUIRED | {"key_token_patterns": ["判断:(是|否)"], "key_token_weight": 3.0})
    assert config_from_dict(config.to_dict()) == config


def test_every_example_finetunejob_renders_a_config_the_trainer_loads():
    """Contracts §7: the operator renders the ConfigMap from the spec; the trainer must accept it."""
    from kubetune_operator.builders import graph
    from kubetune_operator.builders.settings import OperatorSettings
    from kubetune_operator.cli.documents import load_documents, validate_all

    examples = sorted((Path(__file__).resolve().parents[4] / "examples").rglob("*.yaml"))
    resources = validate_all(load_documents(examples))
    for resource in resources:
        resource.metadata.uid = "6f1c1a57-8a2e-4bd4-9b5e-1b8f4f0f0001"
    settings = OperatorSettings(
        artifact_root="s3://artifacts/kubetune", progress_base_url="http://operator:8080", s3_secret="s3"
    )
    rendered = [
        (m["metadata"]["name"], m["data"]["config.yaml"])
        for m in graph.render(resources, settings)
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-train-config")
    ]
    assert len(rendered) >= 3
    for name, text in rendered:
        config = config_from_dict(yaml.safe_load(text), source=name)
        assert config.output.startswith("s3://artifacts/kubetune/")
