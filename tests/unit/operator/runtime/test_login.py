"""`kubetune operator` refuses, in one line naming the kubeconfig, to start without a usable login."""

from __future__ import annotations

import pytest

from kubetune_operator.cli import main


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
