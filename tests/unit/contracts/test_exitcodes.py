from kubetune_operator import exitcodes as operator_side
from kubetune_trainer import exitcodes as trainer_side


def test_operator_knows_every_trainer_exit_code_by_the_same_reason():
    assert operator_side.REASONS == {int(code): reason for code, reason in trainer_side.REASONS.items()}


def test_permanent_failures_agree():
    assert operator_side.PERMANENT == {int(code) for code in trainer_side.PERMANENT}
