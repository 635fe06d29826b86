"""The operator finds the API server in a pod as client-go does: from KUBERNETES_SERVICE_HOST/PORT,
not from the name kubernetes.default.svc (which a pod on the host network cannot resolve)."""

from __future__ import annotations

from kubetune_operator.runtime.operator import in_cluster


def service_account(tmp_path, ca: bool = True):
    (tmp_path / "token").write_text("the-token\n")
    (tmp_path / "namespace").write_text("kubetune-system")
    if ca:
        (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


def test_the_api_server_comes_from_the_service_environment(tmp_path):
    folder = service_account(tmp_path)
    info = in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, folder)
    assert info.server == "https://10.0.0.1:6443"
    assert info.token == "the-token"
    assert info.ca_path == str(folder / "ca.crt")
    assert info.default_namespace == "kubetune-system"


def test_an_ipv6_host_is_bracketed_and_a_missing_ca_is_left_to_the_system(tmp_path):
    folder = service_account(tmp_path, ca=False)
    info = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, folder)
    assert info.server == "https://[fd00::1]:443"
    assert info.ca_path is None


def test_outside_a_pod_there_is_no_in_cluster_login(tmp_path):
    assert in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path) is None
    assert in_cluster({}, service_account(tmp_path)) is None
