"""Git credentials from a Secret directory: only ever in git's environment, never printed."""

from __future__ import annotations

import base64
import shlex
import stat

import pytest

from kubetune_operator.promotion.credentials import GitCredentials, scrub, transport, url_password_free
from kubetune_operator.promotion.errors import PromotionRefused

TOKEN = "glpat-secretsecretsecret"


def secret_dir(tmp_path, **files: str):
    directory = tmp_path / "git-secret"
    directory.mkdir()
    for name, content in files.items():
        (directory / name.replace("ssh_privatekey", "ssh-privatekey")).write_text(content)
    return directory


def test_a_token_becomes_an_authorization_header_scoped_to_the_repository_origin(tmp_path):
    credentials = GitCredentials.from_directory(secret_dir(tmp_path, token=TOKEN + "\n", username="ci-bot"))

    env = credentials.environment("https://git.example.com/platform/gitops.git", tmp_path)

    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com/.extraHeader"
    assert (
        env["GIT_CONFIG_VALUE_0"]
        == "Authorization: Basic " + base64.b64encode(f"ci-bot:{TOKEN}".encode()).decode()
    )
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("credential.helper", "")
    assert not [value for key, value in env.items() if key != "GIT_CONFIG_VALUE_0" and TOKEN in value]
    assert TOKEN not in repr(credentials)


def test_a_flux_or_argo_style_secret_with_username_and_password_works(tmp_path):
    credentials = GitCredentials.from_directory(secret_dir(tmp_path, username="flux", password=TOKEN))

    assert (credentials.username, credentials.token) == ("flux", TOKEN)


def test_the_default_username_is_the_one_github_documents(tmp_path):
    credentials = GitCredentials.from_directory(secret_dir(tmp_path, token=TOKEN))

    assert credentials.username == "x-access-token"


def test_an_ssh_key_is_copied_private_and_host_keys_are_pinned_when_given(tmp_path):
    directory = secret_dir(
        tmp_path,
        ssh_privatekey="-----BEGIN OPENSSH PRIVATE KEY-----\nkey",
        known_hosts="git.example.com ssh-ed25519 AAAA",
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    env = GitCredentials.from_directory(directory).environment(
        "git@git.example.com:platform/gitops.git", scratch
    )

    argv = shlex.split(env["GIT_SSH_COMMAND"])
    key = scratch / "ssh-privatekey"
    assert argv[:3] == ["ssh", "-i", str(key)]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().endswith("key\n")
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={scratch / 'known_hosts'}" in argv
    assert "BatchMode=yes" in argv


def test_without_known_hosts_the_host_key_is_trusted_on_first_use(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    credentials = GitCredentials.from_directory(secret_dir(tmp_path, ssh_privatekey="key"))

    env = credentials.environment("ssh://git@git.example.com/gitops.git", scratch)

    assert "StrictHostKeyChecking=accept-new" in shlex.split(env["GIT_SSH_COMMAND"])


@pytest.mark.parametrize(
    ("files", "url", "message"),
    [
        ({}, "https://git.example.com/g.git", "holds neither `token` (or `password`) for HTTPS nor `ssh-privatekey`"),
        ({"token": ""}, "https://git.example.com/g.git", "token: is empty"),
        ({"token": TOKEN, "username": "a:b"}, "https://git.example.com/g.git", "must be a non-empty name"),
        ({"ssh_privatekey": "key"}, "https://git.example.com/g.git", "is HTTPS but there is no `token`"),
        ({"token": TOKEN}, "git@git.example.com:g.git", "is SSH but there is no `ssh-privatekey`"),
        ({"token": TOKEN}, "file:///srv/g.git", "credentials apply to HTTPS and SSH"),
    ],
)
def test_credentials_that_cannot_work_are_refused_by_name(tmp_path, files, url, message):
    with pytest.raises(PromotionRefused) as refused:
        GitCredentials.from_directory(secret_dir(tmp_path, **files)).environment(url, tmp_path)

    assert message in str(refused.value)
    assert TOKEN not in str(refused.value)


def test_a_missing_credentials_directory_is_named(tmp_path):
    with pytest.raises(PromotionRefused, match=r"--credentials-dir .*absent: no such directory"):
        GitCredentials.from_directory(tmp_path / "absent")


def test_scrub_removes_the_secret_in_every_form_and_any_url_password():
    credentials = GitCredentials(directory=None, token=TOKEN)
    header = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    text = f"fatal: {TOKEN} rejected; header {header}; remote https://bot:hunter2@git.example.com/g.git"

    cleaned = scrub(text, credentials.secrets())

    assert TOKEN not in cleaned and header not in cleaned and "hunter2" not in cleaned
    assert "https://***@git.example.com/g.git" in cleaned


def test_a_repository_url_with_a_password_is_refused_without_echoing_it():
    with pytest.raises(PromotionRefused) as refused:
        url_password_free("https://bot:hunter2@git.example.com/g.git")

    assert "hunter2" not in str(refused.value)
    assert "credentials Secret" in str(refused.value)
    assert url_password_free("https://git.example.com/g.git") == "https://git.example.com/g.git"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://git.example.com/g.git", "http"),
        ("ssh://git@git.example.com/g.git", "ssh"),
        ("git@git.example.com:platform/g.git", "ssh"),
        ("git://127.0.0.1:9418/g.git", "git"),
        ("file:///srv/g.git", "local"),
        ("/srv/g.git", "local"),
    ],
)
def test_transport_is_read_from_the_url(url, kind):
    assert transport(url) == kind
