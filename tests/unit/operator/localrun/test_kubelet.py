"""The local Job controller's podFailurePolicy and completed-index bookkeeping."""

from __future__ import annotations

from kubetune_operator.builders.workload import failure_policy
from kubetune_operator.localrun.kubelet import completed_indexes, policy_action


def failed_pod(code: int, conditions=()):
    return {"status": {"phase": "Failed", "conditions": [{"type": t, "status": "True"} for t in conditions],
                       "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": code}}}]}}


def test_the_builders_policy_ignores_disruptions_fails_permanent_codes_and_counts_the_rest():
    policy = failure_policy("trainer")
    assert policy_action(policy, failed_pod(75, ["DisruptionTarget"])) == "Ignore"
    assert policy_action(policy, failed_pod(64)) == "FailJob"
    assert policy_action(policy, failed_pod(70)) == "FailJob"
    assert policy_action(policy, failed_pod(1)) == "Count"
    assert policy_action(policy, failed_pod(71)) == "Count"
    assert policy_action(None, failed_pod(64)) == "Count"


def test_not_in_rules_and_other_containers():
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "other", "operator": "In", "values": [1]}},
                        {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}}]}
    assert policy_action(policy, failed_pod(1)) == "Count"
    assert policy_action(policy, failed_pod(3)) == "Ignore"


def test_completed_indexes_are_compressed_like_kubernetes():
    assert completed_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert completed_indexes(set()) == ""
