"""A loopback aiohttp app that behaves like the Stable Diffusion API's training status endpoints.

v3 ``POST {root}/fine_tune_status/{id}`` and v6 ``POST {root}/trainer/status/{uuid}`` answer
scripted trainings (``bot.sdapi.timelines``: the documentation's wording, the trainer's own
wording for Dreambooth and LoRA, the v6 trainer), and faults (every error body the service is
known to send, 5xx, HTML pages, hangs, endless and huge bodies) can be injected for the next N
requests. Used by tests, benchmarks and ``python -m bot simulate``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from aiohttp import web

from bot.sdapi.faults import (
    HUGE_BODY_BYTES,
    INVALID_KEY_BODY,
    JSON,
    NOT_FOUND_BODY,
    Fault,
    FaultQueue,
    fault_response,
    json_bytes,
    stream,
)
from bot.sdapi.model import Api
from bot.sdapi.timelines import (
    DEFAULT_KEY,
    STAGES,
    TERMINAL_STAGE,
    Dialect,
    SimTraining,
    TimelineName,
    new_v6_id,
)

__all__ = [
    "DEFAULT_KEY",
    "HUGE_BODY_BYTES",
    "STAGES",
    "TERMINAL_STAGE",
    "Dialect",
    "Fault",
    "RequestRecord",
    "SimTraining",
    "Simulator",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestRecord:
    """One request the simulator answered (or, for a hang or a stream, received)."""

    training_id: str
    key: str | None
    status: int
    at: float
    content_type: str = ""
    api: Api = Api.V3
    path: str = ""


_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(slots=True)
class _Clocked:
    """When a training's timed advances started (None: not yet) and how many it has had."""

    added_at: float | None
    applied: int = 0


class Simulator:
    """The fake API: scripted trainings, fault injection and a record of every request.

    With ``advance_every``, trainings move one stage every that many seconds, counted from
    when they were added (``clock_from="added"``) or from the first status request about them
    (``"first_request"``: a demo training waits for someone to follow it).
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] = (DEFAULT_KEY,),
        advance_every: float | None = None,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        record: bool = True,
        clock_from: Literal["added", "first_request"] = "added",
    ) -> None:
        if advance_every is not None and advance_every <= 0:
            raise ValueError("advance_every must be positive")
        self.keys: set[str] = set(keys)
        self.advance_every = advance_every
        self.retry_after = retry_after
        self.clock_from = clock_from
        self.trainings: dict[str, SimTraining] = {}
        # Trainings whose answer a function gives, on the simulator's clock (replayed timelines).
        self.scripted: dict[str, tuple[str, Api, Callable[[], bytes]]] = {}
        self.requests: list[RequestRecord] = []
        # Long benchmark runs turn the per-request record off; counts and times are still kept.
        self.record = record
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None
        self.base_url: str | None = None
        """The v3 root, ``http://127.0.0.1:<port>/api/v3``, once started."""
        self.v6_base_url: str | None = None
        """The v6 root, ``http://127.0.0.1:<port>/api/v6``, once started."""
        self.streamed: list[int] = []
        """Bytes of body sent by each finished endless or huge answer."""
        self._clock = clock
        self._clocked: dict[str, _Clocked] = {}
        self._faults = FaultQueue()
        self._counts: Counter[str] = Counter()
        self._total = 0
        self._waiters = 0
        self._condition = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # -- scripting -------------------------------------------------------------------------

    def add_scripted(
        self,
        training_id: str,
        answer: Callable[[], bytes],
        *,
        key: str = DEFAULT_KEY,
        api: Api = Api.V3,
    ) -> None:
        """A training whose status body ``answer()`` gives at each request (benchmarks replay
        recorded or generated timelines this way); its key becomes a valid key."""
        self.keys.add(key)
        self.scripted[training_id] = (key, api, answer)

    def add_training(
        self,
        training_id: str,
        *,
        key: str = DEFAULT_KEY,
        dialect: Dialect = "newline",
        fail_at: int | None = None,
        failure_reason: str | None = "CUDA out of memory",
        stage: int = 0,
        added_at: float | None = None,
        timeline: TimelineName = "documented",
    ) -> SimTraining:
        """Script a training; its key becomes a valid key of the simulator.

        ``timeline`` is one of ``bot.sdapi.timelines.TIMELINES`` (a ``v6`` one is served on
        the v6 route only, the others on the v3 route). ``added_at`` (on the simulator's
        clock, default now) is when timed advances start counting: benchmarks stagger
        trainings so their steps do not all appear at once.
        """
        training = SimTraining(
            training_id,
            key=key,
            dialect=dialect,
            stage=stage,
            fail_at=fail_at,
            failure_reason=failure_reason,
            timeline=timeline,
        )
        self.keys.add(key)
        self.trainings[training_id] = training
        if added_at is None and self.clock_from == "added":
            added_at = self._clock()
        self._clocked[training_id] = _Clocked(added_at)
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
        self._faults.add(fault, count, training_id, hang_seconds)

    def clear_faults(self) -> None:
        """Forget every injected fault not yet used up."""
        self._faults.clear()

    def release_hangs(self) -> None:
        """Let the requests hanging now finish (with a 503); later hangs hang again."""
        self._faults.release_hangs()

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
        await self._wait(lambda: self.request_count(training_id) >= n, timeout)

    async def wait_for_streams(
        self,
        n: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 -- a bounded wait for tests
    ) -> None:
        """Wait until at least ``n`` endless or huge answers ended (see ``streamed``)."""
        await self._wait(lambda: len(self.streamed) >= n, timeout)

    async def _wait(self, done: Callable[[], bool], seconds: float) -> None:
        self._waiters += 1
        try:
            async with asyncio.timeout(seconds), self._condition:
                await self._condition.wait_for(done)
        finally:
            self._waiters -= 1

    # -- serving ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp app; the status routes accept any root (``/api/v3``, sandbox...)."""
        app = web.Application()
        app.router.add_post(r"/{root:.*}fine_tune_status/{training_id}", self._handle_v3)
        app.router.add_post(r"/{root:.*}trainer/status/{training_id}", self._handle_v6)
        app.router.add_post(r"/{root:(?:.*/)?}{endpoint:(?:lora_)?fine_tune(?:_v2)?}", self._create)
        app.router.add_post(r"/{root:(?:.*/)?}trainer/train", self._create_v6)
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
        self.v6_base_url = f"http://{shown_host}:{bound_port}/api/v6"
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
            return web.Response(body=INVALID_KEY_BODY, content_type=JSON)
        training_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
        lora = request.match_info["endpoint"].startswith("lora_")
        self.add_training(training_id, key=key, timeline="lora" if lora else "dreambooth")
        log.info("simulator: created training %s", training_id)
        body = {
            "status": "success",
            "messege": "deploying_gpu",
            "data": f"it will take upto {30 if lora else 25} minutes.",
            "training_id": training_id,
        }
        return web.Response(body=json_bytes(body), content_type=JSON)

    async def _create_v6(self, request: web.Request) -> web.Response:
        """Start a v6 trainer run (``trainer/train``); the answer's shape beyond the run's id
        is not documented and is assumed here."""
        key = _key_of(await request.read())
        if key is None or key not in self.keys:
            return web.Response(status=401, body=INVALID_KEY_BODY, content_type=JSON)
        training_id = new_v6_id()
        self.add_training(training_id, key=key, timeline="v6")
        log.info("simulator: created v6 run %s", training_id)
        body = {
            "status": "success",
            "message": "training_started",
            "data": {"id": training_id, "status": "training_started"},
        }
        return web.Response(body=json_bytes(body), content_type=JSON)

    async def _handle_v3(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, Api.V3)

    async def _handle_v6(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, Api.V6)

    async def _handle(self, request: web.Request, api: Api) -> web.StreamResponse:
        training_id = request.match_info["training_id"]
        key = _key_of(await request.read())
        rule = self._faults.take(training_id)
        if rule is None:
            status, body = self._answer(training_id, key, api)
            response = web.Response(status=status, body=body, content_type=JSON)
        elif rule.fault is Fault.HANG:
            await self._record(request, training_id, key, 503, api)
            await self._faults.hang(rule.hang_seconds)
            return fault_response(Fault.UNAVAILABLE, self.retry_after)
        elif rule.fault in (Fault.ENDLESS, Fault.HUGE):
            await self._record(request, training_id, key, 200, api)
            return await stream(request, rule.fault, self._streamed)
        else:
            response = fault_response(rule.fault, self.retry_after)
        await self._record(request, training_id, key, response.status, api)
        return response

    def _answer(self, training_id: str, key: str | None, api: Api) -> tuple[int, bytes]:
        if key is None or key not in self.keys:
            return 200, INVALID_KEY_BODY
        scripted = self.scripted.get(training_id)
        if scripted is not None and scripted[:2] == (key, api):
            return 200, scripted[2]()
        training = self.trainings.get(training_id)
        # Another account's training, or one of the other API, looks exactly like a missing one.
        if training is None or training.key != key or training.api is not api:
            return 404, NOT_FOUND_BODY
        if self.advance_every is not None:
            self._catch_up(training, self.advance_every)
        return 200, training.body_bytes()

    def _catch_up(self, training: SimTraining, every: float) -> None:
        """Apply the timed advances due since the training's clock started (lazily)."""
        clocked = self._clocked[training.training_id]
        now = self._clock()
        if clocked.added_at is None:
            clocked.added_at = now  # the first request about it starts its clock
        due = int((now - clocked.added_at) // every)
        if due > clocked.applied:
            training.advance(due - clocked.applied)
            clocked.applied = due

    async def _streamed(self, sent: int) -> None:
        self.streamed.append(sent)
        await self._notify()

    async def _record(
        self, request: web.Request, training_id: str, key: str | None, status: int, api: Api
    ) -> None:
        now = self._clock()
        if self.record:
            self.requests.append(
                RequestRecord(
                    training_id, key, status, now, request.content_type, api, request.path
                )
            )
        if self.first_request_at is None:
            self.first_request_at = now
        self.last_request_at = now
        self._counts[training_id] += 1
        self._total += 1
        await self._notify()

    async def _notify(self) -> None:
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
