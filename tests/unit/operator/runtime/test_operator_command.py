"""`kubetune operator`: one error naming the kubeconfig when there is no usable login; kopf told
not to scan the cluster when only named namespaces are watched."""

from __future__ import annotations

import kopf
import pytest

from kubetune_operator.cli import main
from kubetune_operator.runtime import operator


@pytest.mark.parametrize("content", [None, "{{{", "current-context: gone\ncontexts: []\n"])
def test_an_unusable_kubeconfig_is_one_error_naming_it(tmp_path, monkeypatch, capsys, content):
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("KUBETUNE_PROGRESS_KEY", "k" * 16)

    assert main(["operator", "--all-namespaces"]) == 2

    error = capsys.readouterr().err
    assert error.startswith("kubetune operator: error: ") and str(kubeconfig) in error
    assert "Traceback" not in error


@pytest.mark.parametrize(("scope", "exact"), [(["-n", "a", "-n", "b"], True), (["-n", "team-*"], False), (["-A"], False)])
def test_only_named_namespaces_turn_off_kopfs_cluster_wide_scans(monkeypatch, scope, exact):
    # The chart's namespaced Roles allow neither listing namespaces nor watching CRDs.
    started = {}
    monkeypatch.setenv("KUBETUNE_PROGRESS_KEY", "k" * 16)
    monkeypatch.setattr(operator, "connection_info", lambda: None)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: started.update(kwargs))

    assert main(["operator", *scope]) == 0

    assert started["memo"].exact_namespaces is exact
    settings = kopf.OperatorSettings()
    operator.configure(settings, exact_namespaces=started["memo"].exact_namespaces)
    assert settings.scanning.disabled is exact and settings.peering.standalone
