"""`tunewatch status ID --watch` and `--json` as a user runs them against the API simulator:
a progress line until the training ends, the exit code telling how it ended, JSON of the
parsed status, and nothing Discord-only (markup) or dangerous (escape sequences) printed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from bot.config import Settings
from bot.sdapi.simulator import DEFAULT_KEY, Simulator

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def env(**values: str) -> dict[str, str]:
    names = set(Settings.model_fields)
    clean = {k: v for k, v in os.environ.items() if k not in names}
    return {**clean, "PYTHONPATH": str(ROOT), "SD_API_KEY": DEFAULT_KEY, **values}


async def status_cli(
    *args: str, cwd: Path, sim: Simulator | None = None, advance: str | None = None, **values: str
) -> tuple[int, str, str]:
    """Run `tunewatch status ...`; with ``advance``, move that training a stage each time it is
    asked about, until the process ends."""
    base = {"SD_API_BASE_URL": sim.base_url} if sim is not None and sim.base_url else {}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "status",
        *args,
        cwd=cwd,
        env=env(**base, **values),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    mover = None
    if advance is not None:
        assert sim is not None

        async def move() -> None:
            seen = 0
            while True:
                seen += 1
                await sim.wait_for_requests(seen, training_id=advance, timeout=30)
                sim.trainings[advance].advance()

        mover = asyncio.create_task(move())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=40)
    finally:
        if mover is not None:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_terminal_safe(text: str) -> None:
    assert "<t:" not in text
    assert "`" not in text
    assert "\x1b" not in text


async def test_watch_until_ready_exits_0(tmp_path: Path) -> None:
    async with Simulator() as sim:
        sim.add_training("Watch00001", stage=1)
        code, out, err = await status_cli(
            "Watch00001", "--watch", "--every", "0.05", cwd=tmp_path, sim=sim, advance="Watch00001"
        )
    assert code == 0, err
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("Watch00001 · ")]
    # A line each time something changed (stdout is not a terminal: no redrawing).
    assert progress[0].startswith("Watch00001 · ▰▰▱▱▱▱▱▱▱▱▱▱ 1/6 steps · Training · ETA about 30")
    assert "Model ready" in progress[-1]
    assert len(progress) == len({p.rsplit(" · checked ", 1)[0] for p in progress})
    assert "Training Watch00001 (v3 API)" in out  # the whole status at the end
    assert_terminal_safe(out + err)


async def test_watch_a_failure_exits_1_and_escape_sequences_stay_inert(tmp_path: Path) -> None:
    async with Simulator() as sim:
        reason = "\x1b[2J\x1b[31mCUDA out of memory"
        sim.add_training("Watch00002", stage=1, fail_at=3, failure_reason=reason)
        code, out, err = await status_cli(
            "Watch00002", "--watch", "--every", "0.05", cwd=tmp_path, sim=sim, advance="Watch00002"
        )
    assert code == 1, err
    assert "\ufffd[31mCUDA out of memory" in out
    assert_terminal_safe(out + err)


async def test_json_prints_the_parsed_status(tmp_path: Path) -> None:
    async with Simulator() as sim:
        sim.add_training("Json000001", stage=4, timeline="dreambooth")
        code, out, err = await status_cli("Json000001", "--json", cwd=tmp_path, sim=sim)
    assert code == 0, err
    (line,) = out.splitlines()
    parsed = json.loads(line)
    assert parsed["training_id"] == "Json000001"
    assert (parsed["api"], parsed["state"], parsed["finished"]) == (
        "v3",
        "trained_model_uploading",
        False,
    )
    assert (parsed["steps_done"], parsed["total_steps"]) == (3, 5)
    assert [s["label"] for s in parsed["steps"]] == [
        "Training Started",
        "Training Done",
        "Model Compressing",
        "Model Uploading",
    ]
    assert parsed["steps"][0]["elapsed_seconds"] == pytest.approx(41.27, abs=0.01)
    assert parsed["model"] is None
    assert DEFAULT_KEY not in out + err


async def test_watch_gives_up_with_3_when_the_api_stays_unreachable(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v3"
    code, out, err = await status_cli(
        "Watch00003",
        "--watch",
        "--every",
        "0.01",
        cwd=tmp_path,
        SD_API_BASE_URL=url,
        API_MAX_ATTEMPTS="1",
    )
    assert code == 3
    assert out == ""
    assert err.count("asking again") == 5
    assert "tunewatch: The Stable Diffusion API could not be reached" in err


async def test_watch_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = await status_cli("Watch00004", "--watch", "--every", "0", cwd=tmp_path)
    assert code == 2
    assert "--every must be a positive number of seconds" in err
    code, _, err = await status_cli("Watch00004", "--api", "v9", cwd=tmp_path)
    assert code == 2
    assert "invalid choice: 'v9'" in err
