"""The kubetune API: one pydantic model per kind, the single source of truth for the CRDs."""

from kubetune_operator.api.evalrun import EvalRun
from kubetune_operator.api.finetunejob import FineTuneJob
from kubetune_operator.api.preferencedataset import PreferenceDataset
from kubetune_operator.api.resource import API_VERSION, GROUP, VERSION, Resource

KINDS: dict[str, type[Resource]] = {
    model.kind_name: model for model in (PreferenceDataset, FineTuneJob, EvalRun)
}

__all__ = ["API_VERSION", "GROUP", "KINDS", "VERSION", "EvalRun", "FineTuneJob", "PreferenceDataset", "Resource"]
