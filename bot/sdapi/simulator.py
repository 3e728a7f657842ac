"""A loopback aiohttp app that behaves like the Stable Diffusion API's training status endpoint.

Scripted trainings walk through the documented states in either documented log dialect, and
faults (5xx, HTML pages, empty bodies, both rate-limit shapes, hangs...) can be injected for the
next N requests. Used by tests, benchmarks and ``python -m bot simulate``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_KEY = "sim-key-0000"

# (state, log line the stage appends); stage 0 has the creation note instead of a log.
STAGES: tuple[tuple[str, str | None], ...] = (
    ("deploying_gpu", None),
    ("training_started", "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"),
    ("training_success", "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"),
    ("trained_model_compressing", "Step:3 Model Compressing, 3 Steps to go : ETA : 12 minutes"),
    ("trained_model_uploading", "Step:4 Model Uploading, 2 Steps to go : ETA : 10 minutes"),
    ("trained_model_uploaded", "Step:5 Model Uploaded, 1 Steps to go : ETA : 5 minutes"),
    ("deploying_model", "Step:6 Deploying Model, 0 Steps to go : ETA : 2 minutes"),
    ("model_ready", "Model loaded successfully"),
)
TERMINAL_STAGE = len(STAGES) - 1
CREATION_NOTE = "it will take upto 25 minutes."
FAILED_STATE = "training_failed"

Dialect = Literal["slash_n", "newline"]


class Fault(StrEnum):
    """What an injected fault makes the next matching request(s) answer."""

    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    HTML = "html"
    EMPTY = "empty"
    RATE_LIMIT_429 = "429"
    RATE_LIMIT_BODY = "rate_limit_body"
    HANG = "hang"
    INVALID_KEY = "invalid_key"
    NOT_FOUND = "not_found"
    GARBAGE = "garbage"


@dataclass(slots=True)
class RequestRecord:
    """One request the simulator answered (or, for a hang, received)."""

    training_id: str
    key: str | None
    status: int
    at: float
    content_type: str = ""


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


_INVALID_KEY_BODY = _json(
    {
        "status": "error",
        "message": "Invalid Api Key",
        "tip": "1. Make sure you are passing Content-Type: application/json in header. "
        "2. Make sure you are doing POST request. 3. Make sure your API key is valid.",
    }
)
_NOT_FOUND_BODY = _json({"status": "error", "message": "Training ID does not exist"})
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_JSON = "application/json"
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass
class SimTraining:
    """One scripted training: its stage in :data:`STAGES`, or a failure at ``fail_at``."""

    training_id: str
    key: str = DEFAULT_KEY
    dialect: Dialect = "newline"
    stage: int = 0
    fail_at: int | None = None
    failure_reason: str = "CUDA out of memory"
    # Serialized bodies: a body is a pure function of these fields, and requests repeat a lot.
    _bodies: dict[tuple[int, str, int | None, str], bytes] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.dialect not in ("slash_n", "newline"):
            raise ValueError(f"unknown dialect {self.dialect!r}")
        if self.fail_at is not None and not 0 <= self.fail_at <= TERMINAL_STAGE:
            raise ValueError(f"fail_at must be within 0..{TERMINAL_STAGE}")
        self.stage = min(max(self.stage, 0), self.terminal_stage)

    @property
    def terminal_stage(self) -> int:
        """The stage this training stops at: its failure, or model_ready."""
        return TERMINAL_STAGE if self.fail_at is None else self.fail_at

    def advance(self, n: int = 1) -> None:
        """Move forward ``n`` stages, stopping at the terminal stage."""
        self.stage = min(max(self.stage + n, 0), self.terminal_stage)

    @property
    def failed(self) -> bool:
        """True once the training reached its failure stage."""
        return self.fail_at is not None and self.stage >= self.fail_at

    @property
    def state(self) -> str:
        """The ``messege`` the API would send now."""
        return FAILED_STATE if self.failed else STAGES[self.stage][0]

    @property
    def terminal(self) -> bool:
        """True when the training will not change any more."""
        return self.stage >= self.terminal_stage

    def _log(self) -> str:
        if self.stage == 0 and not self.failed:
            return CREATION_NOTE
        last = self.stage - 1 if self.failed else self.stage
        lines = [line for _, line in STAGES[1 : last + 1] if line is not None]
        if self.failed:
            lines.append(f"Training failed: {self.failure_reason}")
        if self.dialect == "newline":
            return "\n".join(lines)
        return "".join(f" /n {line}" for line in lines)

    def body(self) -> dict[str, Any]:
        """The JSON body the API would return now."""
        body: dict[str, Any] = {"status": "success", "messege": self.state, "data": self._log()}
        if self.failed:
            body["message"] = self.failure_reason
        return body

    def body_bytes(self) -> bytes:
        """:meth:`body` serialized, cached per stage."""
        cache_key = (self.stage, self.dialect, self.fail_at, self.failure_reason)
        cached = self._bodies.get(cache_key)
        if cached is None:
            cached = self._bodies[cache_key] = _json(self.body())
        return cached


@dataclass(slots=True)
class _FaultRule:
    fault: Fault
    remaining: int | None
    training_id: str | None
    hang_seconds: float


@dataclass(slots=True)
class _Clocked:
    """When a training was added and how many timed advances it has had."""

    added_at: float
    applied: int = 0


class Simulator:
    """The fake API: scripted trainings, fault injection and a record of every request."""

    def __init__(
        self,
        *,
        keys: Iterable[str] = (DEFAULT_KEY,),
        advance_every: float | None = None,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        record: bool = True,
    ) -> None:
        if advance_every is not None and advance_every <= 0:
            raise ValueError("advance_every must be positive")
        self.keys: set[str] = set(keys)
        self.advance_every = advance_every
        self.retry_after = retry_after
        self.trainings: dict[str, SimTraining] = {}
        self.requests: list[RequestRecord] = []
        # Long benchmark runs turn the per-request record off; counts and times are still kept.
        self.record = record
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None
        self.base_url: str | None = None
        self._clock = clock
        self._clocked: dict[str, _Clocked] = {}
        self._faults: list[_FaultRule] = []
        self._counts: Counter[str] = Counter()
        self._total = 0
        self._waiters = 0
        self._condition = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -- scripting -------------------------------------------------------------------------

    def add_training(
        self,
        training_id: str,
        *,
        key: str = DEFAULT_KEY,
        dialect: Dialect = "newline",
        fail_at: int | None = None,
        failure_reason: str = "CUDA out of memory",
        stage: int = 0,
        added_at: float | None = None,
    ) -> SimTraining:
        """Script a training; its key becomes a valid key of the simulator.

        ``added_at`` (on the simulator's clock, default now) is when timed advances start
        counting: benchmarks stagger trainings so their steps do not all appear at once.
        """
        training = SimTraining(
            training_id,
            key=key,
            dialect=dialect,
            stage=stage,
            fail_at=fail_at,
            failure_reason=failure_reason,
        )
        self.keys.add(key)
        self.trainings[training_id] = training
        self._clocked[training_id] = _Clocked(self._clock() if added_at is None else added_at)
        return training

    def inject(
        self,
        fault: Fault,
        *,
        count: int | None = 1,
        training_id: str | None = None,
        hang_seconds: float = 3600,
    ) -> None:
        """Give the next ``count`` matching requests ``fault`` (None: until clear_faults())."""
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None")
        self._faults.append(_FaultRule(Fault(fault), count, training_id, hang_seconds))

    def clear_faults(self) -> None:
        """Forget every injected fault not yet used up."""
        self._faults.clear()

    def release_hangs(self) -> None:
        """Let the requests hanging now finish (with a 503); later hangs hang again."""
        self._release.set()
        self._release = asyncio.Event()

    # -- observation -----------------------------------------------------------------------

    def request_count(self, training_id: str | None = None) -> int:
        """Requests recorded so far, for one training id or in all."""
        return self._total if training_id is None else self._counts[training_id]

    async def wait_for_requests(
        self,
        n: int,
        *,
        training_id: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 -- the documented API: a bounded wait for tests
    ) -> None:
        """Wait until at least ``n`` requests (for ``training_id``) were recorded."""
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout), self._condition:
                await self._condition.wait_for(lambda: self.request_count(training_id) >= n)
        finally:
            self._waiters -= 1

    # -- serving ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp app; the status route accepts any root (``/api/v3``, sandbox...)."""
        app = web.Application()
        app.router.add_post(r"/{root:.*}fine_tune_status/{training_id}", self._handle)
        app.router.add_post(r"/{root:(?:.*/)?}{endpoint:(?:lora_)?fine_tune(?:_v2)?}", self._create)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); returns the v3 base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # No access log: benchmarks push thousands of requests a second through here.
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown_host}:{bound_port}/api/v3"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; hanging requests are released first so shutdown does not wait."""
        runner, self._runner = self._runner, None
        self.release_hangs()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the handlers ----------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        """Start a new training, as ``fine_tune`` / ``lora_fine_tune`` do (for people trying
        tunewatch against the simulator: each call gives a fresh training to follow)."""
        key = _key_of(await request.read())
        if key is None or key not in self.keys:
            return web.Response(body=_INVALID_KEY_BODY, content_type=_JSON)
        training_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
        self.add_training(training_id, key=key)
        lora = request.match_info["endpoint"].startswith("lora_")
        log.info("simulator: created training %s", training_id)
        body = {
            "status": "success",
            "messege": "deploying_gpu",
            "data": f"it will take upto {30 if lora else 25} minutes.",
            "training_id": training_id,
        }
        return web.Response(body=_json(body), content_type=_JSON)

    async def _handle(self, request: web.Request) -> web.Response:
        training_id = request.match_info["training_id"]
        key = _key_of(await request.read())
        rule = self._take_fault(training_id)
        if rule is None:
            status, body = self._answer(training_id, key)
            response = web.Response(status=status, body=body, content_type=_JSON)
        elif rule.fault is Fault.HANG:
            await self._record(training_id, key, 503, request.content_type)
            release = self._release
            try:
                async with asyncio.timeout(rule.hang_seconds):
                    await release.wait()
            except TimeoutError:
                pass
            return self._fault_response(Fault.UNAVAILABLE)
        else:
            response = self._fault_response(rule.fault)
        await self._record(training_id, key, response.status, request.content_type)
        return response

    def _take_fault(self, training_id: str) -> _FaultRule | None:
        for index, rule in enumerate(self._faults):
            if rule.training_id is None or rule.training_id == training_id:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        del self._faults[index]
                return rule
        return None

    def _answer(self, training_id: str, key: str | None) -> tuple[int, bytes]:
        if key is None or key not in self.keys:
            return 200, _INVALID_KEY_BODY
        training = self.trainings.get(training_id)
        # Another account's training looks exactly like a missing one.
        if training is None or training.key != key:
            return 404, _NOT_FOUND_BODY
        if self.advance_every is not None:
            self._catch_up(training, self.advance_every)
        return 200, training.body_bytes()

    def _catch_up(self, training: SimTraining, every: float) -> None:
        """Apply the timed advances due since the training was added (lazily, per request)."""
        clocked = self._clocked[training.training_id]
        due = int((self._clock() - clocked.added_at) // every)
        if due > clocked.applied:
            training.advance(due - clocked.applied)
            clocked.applied = due

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault is Fault.SERVER_ERROR:
            body = _json({"status": "error", "message": "Internal Server Error"})
            return web.Response(status=500, body=body, content_type=_JSON)
        if fault is Fault.UNAVAILABLE or fault is Fault.HANG:
            body = _json({"status": "error", "message": "Service Unavailable"})
            return web.Response(status=503, body=body, content_type=_JSON)
        if fault is Fault.HTML:
            return web.Response(status=502, body=_HTML_502, content_type="text/html")
        if fault is Fault.EMPTY:
            return web.Response(status=200, body=b"", content_type=_JSON)
        if fault is Fault.RATE_LIMIT_429:
            seconds: float | int = self.retry_after
            if float(seconds).is_integer():
                seconds = int(seconds)
            body = _json(
                {"status": "error", "message": "Rate limit exceeded", "retry_after": seconds}
            )
            headers = {"Retry-After": str(math.ceil(self.retry_after))}
            return web.Response(status=429, body=body, content_type=_JSON, headers=headers)
        if fault is Fault.RATE_LIMIT_BODY:
            body = _json(
                {
                    "status": "error",
                    "messege": "Rate limit exceeded",
                    "tips": "you are sending same request multiple times, spam filter is "
                    "enabled, please wait for 30 seconds and try again",
                }
            )
            return web.Response(status=200, body=body, content_type=_JSON)
        if fault is Fault.INVALID_KEY:
            return web.Response(status=200, body=_INVALID_KEY_BODY, content_type=_JSON)
        if fault is Fault.NOT_FOUND:
            return web.Response(status=404, body=_NOT_FOUND_BODY, content_type=_JSON)
        return web.Response(status=200, body=b"not json{", content_type=_JSON)

    async def _record(
        self, training_id: str, key: str | None, status: int, content_type: str
    ) -> None:
        now = self._clock()
        if self.record:
            self.requests.append(RequestRecord(training_id, key, status, now, content_type))
        if self.first_request_at is None:
            self.first_request_at = now
        self.last_request_at = now
        self._counts[training_id] += 1
        self._total += 1
        # Taking the condition's lock costs; only pay it when someone waits.
        if self._waiters:
            async with self._condition:
                self._condition.notify_all()


def _key_of(raw: bytes) -> str | None:
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    key = body.get("key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


DEMO_TRAININGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("DemoReady01", {"stage": TERMINAL_STAGE}),
    ("DemoRun0001", {"dialect": "newline", "stage": 1}),
    ("DemoSlash01", {"dialect": "slash_n", "stage": 0}),
    ("DemoFail001", {"stage": 1, "fail_at": 4}),
)


def run_demo(host: str, port: int, advance_every: float = 5.0) -> None:
    """Serve the demo trainings until interrupted (blocking)."""
    asyncio.run(_serve_demo(host, port, advance_every))


async def _serve_demo(host: str, port: int, advance_every: float) -> None:
    sim = Simulator(advance_every=advance_every)
    for training_id, options in DEMO_TRAININGS:
        sim.add_training(training_id, **options)
    base_url = await sim.start(host, port)
    log.info("simulated Stable Diffusion API at %s (key %s)", base_url, DEFAULT_KEY)
    log.info(
        "demo trainings: %s; each advances one stage every %gs",
        ", ".join(training_id for training_id, _ in DEMO_TRAININGS),
        advance_every,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
