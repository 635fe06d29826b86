"""Git credentials from a mounted Secret, handed to git through its environment only.

The directory holds `token` (HTTPS; optional `username`; `password` is taken for `token`, as Flux and
Argo CD Secrets name it) or `ssh-privatekey` (optional
`known_hosts`). A token travels as an `Authorization` header in `GIT_CONFIG_*` variables,
never in the URL or argv, so git cannot echo it; `scrub` removes it from anything git prints
all the same.
"""

from __future__ import annotations

import base64
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kubetune_operator.promotion.errors import PromotionRefused
from kubetune_operator.redact import REDACTED, redact

log = logging.getLogger(__name__)

# GitHub takes any username with a token; this one is what its own tooling uses.
DEFAULT_USERNAME = "x-access-token"
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:(?!//)")


def transport(url: str) -> str:
    """`http`, `ssh`, `git` (daemon) or `local`: how git reaches `url`."""
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            return "http"
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            return "ssh"
        return "git" if scheme == "git" else "local"
    return "ssh" if _SCP_LIKE.match(url) else "local"


def url_password_free(url: str) -> str:
    """`url` unless it carries a password, which would reach argv, logs and the status."""
    if "://" in url and urlsplit(url).password is not None:
        raise PromotionRefused(
            f"--repo {redact(url)}: the URL carries a password; "
            "put the token in the credentials Secret (file `token`) instead"
        )
    return url


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return redact(text)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromotionRefused(
            f"credentials file {path}: cannot be read ({exc.__class__.__name__})"
        ) from None


def _read_nonempty(path: Path) -> str:
    text = _read(path)
    if not text:
        raise PromotionRefused(f"credentials file {path}: is empty")
    return text


@dataclass(frozen=True)
class GitCredentials:
    directory: Path
    token: str | None = field(default=None, repr=False)
    username: str = DEFAULT_USERNAME
    ssh_private_key: str | None = field(default=None, repr=False)
    known_hosts: str | None = None

    @classmethod
    def from_directory(cls, directory: Path) -> GitCredentials:
        if not directory.is_dir():
            raise PromotionRefused(f"--credentials-dir {directory}: no such directory")
        token_file, key_file = directory / "token", directory / "ssh-privatekey"
        if not token_file.exists() and (directory / "password").exists():
            # Flux's and Argo CD's git Secrets carry `username` and `password`; the password is the token.
            token_file = directory / "password"
        if not token_file.exists() and not key_file.exists():
            raise PromotionRefused(
                f"--credentials-dir {directory}: holds neither `token` (or `password`) for HTTPS "
                "nor `ssh-privatekey` for SSH"
            )
        token = _read_nonempty(token_file) if token_file.exists() else None
        username_file = directory / "username"
        username = _read(username_file) if username_file.exists() else DEFAULT_USERNAME
        if not username or ":" in username:
            raise PromotionRefused(f"credentials file {username_file}: must be a non-empty name without ':'")
        key = _read_nonempty(key_file) if key_file.exists() else None
        hosts_file = directory / "known_hosts"
        known_hosts = _read(hosts_file) if hosts_file.exists() else None
        return cls(directory, token, username, key, known_hosts)

    @property
    def _basic_auth(self) -> str:
        return base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def secrets(self) -> tuple[str, ...]:
        """Every form of the secret that git could print."""
        if self.token is None:
            return ()
        return (self.token, self._basic_auth)

    def environment(self, url: str, scratch: Path) -> dict[str, str]:
        """Variables that make git authenticate to `url`; files it needs go into `scratch` (0600)."""
        kind = transport(url)
        if kind == "http":
            if self.token is None:
                raise PromotionRefused(
                    f"--credentials-dir {self.directory}: {url} is HTTPS but there is no `token`"
                )
            if url.lower().startswith("http://"):
                log.warning("sending the git token to %s over plain http", url)
            parts = urlsplit(url)
            return {
                # Scoped to the repository's origin, so a redirect elsewhere never receives it.
                "GIT_CONFIG_COUNT": "2",
                "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {self._basic_auth}",
                # An empty helper resets the list: no stored credential is tried instead of the token.
                "GIT_CONFIG_KEY_1": "credential.helper",
                "GIT_CONFIG_VALUE_1": "",
            }
        if kind == "ssh":
            if self.ssh_private_key is None:
                raise PromotionRefused(
                    f"--credentials-dir {self.directory}: {url} is SSH but there is no `ssh-privatekey`"
                )
            return {"GIT_SSH_COMMAND": self._ssh_command(scratch)}
        raise PromotionRefused(
            f"--credentials-dir: {url} is a {kind} repository; credentials apply to HTTPS and SSH"
        )

    def _ssh_command(self, scratch: Path) -> str:
        # A Secret volume's files are group-readable, which ssh refuses for a private key.
        key_file = scratch / "ssh-privatekey"
        key_file.touch(mode=0o600)
        key_file.write_text(self.ssh_private_key + "\n")
        hosts_file = scratch / "known_hosts"
        hosts_file.touch(mode=0o600)
        if self.known_hosts is not None:
            hosts_file.write_text(self.known_hosts + "\n")
            checking = "yes"
        else:
            log.warning(
                "no known_hosts in %s: trusting the git server's host key on first use", self.directory
            )
            checking = "accept-new"
        return shlex.join(
            [
                "ssh",
                "-i",
                str(key_file),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={hosts_file}",
                "-o",
                f"StrictHostKeyChecking={checking}",
            ]
        )
