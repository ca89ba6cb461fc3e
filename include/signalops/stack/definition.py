"""What the stack runs, and with which settings.

One definition: ``ops/Procfile`` names the long-running services and their commands,
``ops/stack.env`` their settings; docker-compose.yaml runs the same commands with the same
settings. Optional services (``OPTIONAL``) run only when their switch in ``ops/stack.env``
is on (``auto``, the default: where their program is on PATH).

``load_env`` is the environment every service gets: the caller's, the shared Airflow
secrets (from the environment, else generated once into ``<STACK_DIR>/secrets.env``, mode
0600, never in the repo), then ``ops/stack.env`` sourced by bash on top.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROCFILE = REPO / "ops" / "Procfile"
STACK_ENV = REPO / "ops" / "stack.env"
SECRET_NAMES = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY")
# Procfile services that run only when their switch (set in ops/stack.env) is on.
OPTIONAL = {"prometheus": "STACK_PROMETHEUS"}


class StackError(RuntimeError):
    """The stack could not be set up, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    command: str


def read_procfile(path: Path = PROCFILE) -> list[Service]:
    """The ``name: command`` lines of a Procfile, in order (comments and blanks skipped)."""
    services: list[Service] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise StackError(f"{path}:{number}: expected 'name: command', got {raw!r}")
        services.append(Service(name.strip(), command.strip()))
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise StackError(f"{path}: a service name is used twice: {names}")
    return services


def enabled(env: Mapping[str, str], service: Service) -> bool:
    """Whether this stack runs ``service``: always, unless it is OPTIONAL and switched off
    (``auto``: on where its program is on PATH)."""
    switch = OPTIONAL.get(service.name)
    if switch is None:
        return True
    value = env.get(switch, "auto").strip().lower()
    program = shlex.split(service.command)[0]
    found = shutil.which(program, path=env.get("PATH")) is not None
    if value == "auto":
        return found
    if value in ("1", "true", "yes", "on"):
        if not found:
            raise StackError(
                f"{switch}={env[switch]} but `{program}` is not on PATH "
                f"(Debian: apt-get install {program}), or set {switch}=false"
            )
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StackError(f"{switch}={env[switch]!r}: expected auto, true or false")


def services(env: Mapping[str, str]) -> list[Service]:
    """The Procfile's services this stack runs, in order."""
    return [s for s in read_procfile() if enabled(env, s)]


def stack_dir(env: Mapping[str, str]) -> Path:
    default = Path(env.get("SIGNALOPS_STATE_DIR") or REPO / ".signalops") / "stack"
    return Path(env.get("STACK_DIR") or default).resolve()


def _secrets(directory: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The shared Airflow secrets: from the environment, else generated once and kept."""
    path = directory / "secrets.env"
    kept: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in SECRET_NAMES:
                kept[key] = value
    missing = [k for k in SECRET_NAMES if not env.get(k) and k not in kept]
    if missing:
        from cryptography.fernet import Fernet

        fresh = {
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        }
        kept.update({k: fresh[k] for k in missing})
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in sorted(kept.items())))
        os.replace(tmp, path)
    return {k: env.get(k) or kept[k] for k in SECRET_NAMES}


def load_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every service gets: ``base`` (default os.environ) with the secrets,
    then ``ops/stack.env`` sourced by bash on top."""
    env = dict(os.environ if base is None else base)
    directory = stack_dir(env)
    env.update(STACK_DIR=str(directory), STACK_REPO=str(REPO))
    env.update(_secrets(directory, env))
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    script = f"set -euo pipefail; source {shlex.quote(str(STACK_ENV))}; env -0"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"{STACK_ENV}: {proc.stderr.decode().strip()}")
    pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if not k.startswith("BASH_FUNC_") and k != "_"}
