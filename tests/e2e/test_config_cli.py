"""Settings and the command line as an operator meets them: `python -m bot ...`."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from bot.config import Settings, load_settings
from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from tests.support.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    names = set(Settings.model_fields)
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=clean_env(PYTHONPATH=str(ROOT), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_env_example_documents_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    assert set(documented) == set(Settings.model_fields)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, value in documented.items():
        default = getattr(defaults, name)
        if default is None:
            assert value == "", name
        else:
            parsed = Settings(_env_file=None, **{name: value})  # type: ignore[call-arg, arg-type]
            assert getattr(parsed, name) == default, name


def test_env_example_parses_as_is(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    settings = load_settings(env_file=str(env_file))
    assert settings.DISCORD_TOKEN is None
    assert settings.POLL_INTERVAL_SECONDS == 30
    assert settings.poll_max_seconds == 150
    assert settings.POLL_POLICY == "adaptive"


def test_missing_token_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert ".env.example" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_setting_is_one_clear_message(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=x\nPOLL_INTERVAL_SECONDS=soon\n")
    result = run_cli(cwd=tmp_path, LOG_LEVEL="LOUD")
    assert result.returncode == 2
    assert "POLL_INTERVAL_SECONDS" in result.stderr
    assert "LOG_LEVEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_from_dotenv_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=abc.def\nDISCORD_GUILD_ID=\n")
    settings = load_settings(require_token=True, env_file=str(env_file))
    assert settings.DISCORD_TOKEN is not None
    assert settings.DISCORD_TOKEN.get_secret_value() == "abc.def"
    assert settings.DISCORD_GUILD_ID is None
    assert "abc.def" not in repr(settings)


def test_wrong_token_is_a_clear_message(tmp_path: Path) -> None:
    async def scenario() -> subprocess.CompletedProcess[str]:
        from tests.support.fakediscord import FakeDiscord

        fake = FakeDiscord()
        await fake.start()
        try:
            return await asyncio.to_thread(
                run_cli,
                cwd=tmp_path,
                DISCORD_TOKEN="wrong-token",
                DISCORD_API_BASE=fake.api_base,
                DISCORD_GATEWAY_URL=fake.gateway_url,
                DATABASE_PATH=str(tmp_path / "t.db"),
            )
        finally:
            await fake.stop()

    result = asyncio.run(scenario())
    assert result.returncode == 2
    assert "Discord refused DISCORD_TOKEN" in result.stderr
    assert "wrong-token" not in result.stderr


async def test_status_subcommand_prints_the_status(tmp_path: Path) -> None:
    async with Simulator() as sim:
        sim.add_training("CliStatus1", stage=3, timeline="dreambooth")
        result = await asyncio.to_thread(
            run_cli,
            "status",
            "CliStatus1",
            cwd=tmp_path,
            SD_API_KEY=DEFAULT_KEY,
            SD_API_BASE_URL=sim.base_url,
        )
        missing = await asyncio.to_thread(
            run_cli,
            "status",
            "NotThere01",
            cwd=tmp_path,
            SD_API_KEY=DEFAULT_KEY,
            SD_API_BASE_URL=sim.base_url,
        )
    assert result.returncode == 0, result.stderr
    assert "Training CliStatus1" in result.stdout
    assert "Compressing the model (trained_model_compressing)" in result.stdout
    assert "3/6 steps" in result.stdout
    assert "Step:3 Model Compressing" in result.stdout
    assert missing.returncode == 1
    assert "does not know training NotThere01;" in missing.stderr
    assert DEFAULT_KEY not in result.stdout + result.stderr + missing.stdout + missing.stderr


def test_status_without_key(tmp_path: Path) -> None:
    result = run_cli("status", "Abc", cwd=tmp_path)
    assert result.returncode == 2
    assert "SD_API_KEY is not set" in result.stderr


async def test_simulate_subcommand_serves_demo_trainings(tmp_path: Path) -> None:
    import aiohttp

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "simulate",
        "--port",
        str(port),
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(ROOT)),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = b""
        while b"simulated Stable Diffusion API" not in line:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
            assert line, "simulator exited"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/api/v3/fine_tune_status/DemoReady01",
                json={"key": DEFAULT_KEY},
            ) as response,
        ):
            body = await response.json(content_type=None)
        assert body["messege"] == "model_ready"
    finally:
        proc.terminate()
        await proc.wait()


def test_help_and_version_name_the_program_tunewatch(tmp_path: Path) -> None:
    top = run_cli("--help", cwd=tmp_path)
    status = run_cli("status", "--help", cwd=tmp_path)
    version = run_cli("--version", cwd=tmp_path)
    assert top.returncode == status.returncode == version.returncode == 0
    assert top.stdout.startswith("usage: tunewatch ")
    assert "python -m bot" not in top.stdout
    assert "Exit codes: 0" in top.stdout
    assert status.stdout.startswith("usage: tunewatch status ")
    assert "tunewatch status -- -abc123" in status.stdout
    assert version.stdout == f"tunewatch {importlib.metadata.version('tunewatch')}\n"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (("status",), ("status", "-abc"), ("frobnicate",), ("--verbose",)):
        result = run_cli(*args, cwd=tmp_path, SD_API_KEY=DEFAULT_KEY)
        assert result.returncode == 2, args
        assert result.stderr.startswith("usage: tunewatch"), args
        assert "Traceback" not in result.stderr


async def test_status_exit_codes(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v3"
    closed.close()
    async with Simulator() as sim:
        sim.add_training("Running001", stage=3)
        sim.add_training("Ready00001", stage=99)
        sim.add_training("Failed0001", stage=3, fail_at=3, failure_reason="CUDA out of memory")
        sim.add_training("-Dash00001", stage=2)
        api = {"SD_API_KEY": DEFAULT_KEY, "SD_API_BASE_URL": sim.base_url}
        cases: list[tuple[tuple[str, ...], dict[str, str], int, str]] = [
            (("Running001",), api, 0, "Training Running001"),
            (("Ready00001",), api, 0, "Training Ready00001"),
            (("Failed0001",), api, 1, "CUDA out of memory"),
            (("--", "-Dash00001"), api, 0, "Training -Dash00001"),
            (("NotThere01",), api, 1, "does not know training NotThere01"),
            (("not an id!",), api, 2, "not a valid training id"),
            (("Running001",), {**api, "SD_API_KEY": "wrong-key"}, 2, "API key"),
            (
                ("Running001",),
                {**api, "SD_API_BASE_URL": closed_url, "API_MAX_ATTEMPTS": "1"},
                3,
                "could not be reached",
            ),
        ]
        results = await asyncio.gather(
            *(
                asyncio.to_thread(run_cli, "status", *args, cwd=tmp_path, **env)
                for args, env, *_ in cases
            )
        )
    for (args, _env, code, words), result in zip(cases, results, strict=True):
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert words in result.stdout + result.stderr, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        if code and args != ("Failed0001",):  # a failed training is a status, not an error
            told = [line for line in result.stderr.splitlines() if line.startswith("tunewatch: ")]
            assert len(told) == 1, (args, result.stderr)


def test_health_without_http_port_is_a_settings_error(tmp_path: Path) -> None:
    result = run_cli("health", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "tunewatch: HTTP_PORT is not set: the health check asks the bot's HTTP server; "
        "set HTTP_PORT.\n"
    )


def test_health_when_nothing_answers(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli("health", cwd=tmp_path, HTTP_PORT=str(port), HTTP_HOST="0.0.0.0")  # noqa: S104
    assert result.returncode == 3
    assert f"nothing answers on http://127.0.0.1:{port}/healthz" in result.stderr


async def test_health_reports_an_unhealthy_bot(tmp_path: Path) -> None:
    # A stand-in for the bot's server answering as /healthz does when the gateway is down.
    from aiohttp import web

    async def healthz(_request: web.Request) -> web.Response:
        body = {"ok": False, "problems": ["gateway not connected"], "tracker_tick_age_seconds": 1}
        return web.json_response(body, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        result = await asyncio.to_thread(run_cli, "health", cwd=tmp_path, HTTP_PORT=str(port))
    finally:
        await runner.cleanup()
    assert result.returncode == 1
    assert result.stderr == "tunewatch: unhealthy: gateway not connected\n"
