"""The one place that talks HTTP to the Stable Diffusion API."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import aiohttp
import yarl
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidTrainingId,
    RateLimited,
    SdApiError,
    TrainingNotFound,
)
from bot.sdapi.status import TrainingStatus, parse_status

log = logging.getLogger(__name__)

TRAINING_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_RETRY_AFTER = 86_400.0
# A training id no one has: asking for it tells whether the API accepts a key.
KEY_CHECK_TRAINING_ID = "tunewatch-key-check"
# Parsed answers kept by body: at most this many, of at most this size each (a few MB at most).
PARSE_MEMO_ENTRIES = 1024
PARSE_MEMO_MAX_BODY = 4096
# Request bodies kept by key (see SdApiClient._bodies); the cache starts over when full.
BODY_CACHE_ENTRIES = 1024
UNREACHABLE = "The Stable Diffusion API could not be reached; try again in a few minutes."


def validate_training_id(raw: str) -> str:
    """Return the id stripped of surrounding blanks, or raise InvalidTrainingId."""
    training_id = raw.strip()
    if not TRAINING_ID_RE.fullmatch(training_id):
        raise InvalidTrainingId(
            "That is not a valid training id: use the id the API returned when the training "
            "was created (letters, digits, `-` and `_`, 1 to 64 characters).",
            detail=f"invalid training id of length {len(training_id)}",
        )
    return training_id


def _retry_after_header(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, SdApiError) and exc.transient


class SdApiClient:
    """``fine_tune_status`` with timeouts, bounded retries and per-key concurrency."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float = 15.0,
        max_concurrency: int = 16,
        max_concurrency_per_key: int = 4,
        max_attempts: int = 4,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._overall = asyncio.Semaphore(max_concurrency)
        self._per_key_limit = max_concurrency_per_key
        self._per_key: dict[int, asyncio.Semaphore] = {}
        self._client_timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._backoff = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)
        # Status bodies repeat a lot (a training's answer rarely changes between two polls, and
        # trainings at the same stage answer the same text): parse each distinct body once.
        # parse_status is a pure function of (status, body) and TrainingStatus is immutable.
        self._parsed: dict[tuple[int, bytes], TrainingStatus] = {}
        # The request body of each key: every poll with one key sends the same bytes, and
        # aiohttp's bytes payloads are reusable (building one costs more than the rest of the
        # client's own work). It holds keys as the key resolver's cache does, and is emptied
        # when a key is replaced or removed (forget_keys).
        self._bodies: dict[str, aiohttp.BytesPayload] = {}
        # Status URLs are built from the parsed root: parsing a URL string per request (what
        # aiohttp does with a str) costs more than the rest of a poll's own work.
        self._root = yarl.URL(self._base_url)
        self._status_path = f"{self._root.raw_path.rstrip('/')}/fine_tune_status/"

    def forget_keys(self) -> None:
        """Drop the request bodies kept per key (a key was replaced or removed)."""
        self._bodies.clear()

    def status_url(self, training_id: str) -> str:
        """The status URL of a training id (the one ``attempt`` posts to)."""
        return str(self._url_of(quote(training_id, safe="")))

    def _url_of(self, encoded_id: str) -> yarl.URL:
        """The status URL of an id already URL-encoded as it is (a validated id is)."""
        return self._root.with_path(self._status_path + encoded_id, encoded=True)

    def _key_semaphore(self, key: str) -> asyncio.Semaphore:
        # Index by the string's hash (cached by Python, salted per process) so no structure we
        # keep or log holds the key itself; a collision would only share a concurrency limit.
        sem = self._per_key.get(hash(key))
        if sem is None:
            sem = self._per_key[hash(key)] = asyncio.Semaphore(self._per_key_limit)
        return sem

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return exc.retry_after
        return float(self._backoff(state))

    async def fine_tune_status(
        self,
        training_id: str,
        key: str,
        *,
        budget: float | None = None,
        retries: bool = True,
    ) -> TrainingStatus:
        """Ask for one training's status.

        ``budget`` bounds the total time in seconds, retries and waits included (an
        interaction cannot wait minutes); ``retries=False`` makes a single attempt.
        """
        if not retries and budget is None:
            return await self.attempt(training_id, key)
        deadline = None if budget is None else time.monotonic() + budget
        stop: stop_base = stop_after_attempt(self._max_attempts if retries else 1)
        if budget is not None:
            stop = stop | stop_before_delay(budget)
        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self.attempt(training_id, key, deadline)
        raise AssertionError("unreachable")  # pragma: no cover

    async def check_key(self, key: str, *, budget: float) -> None:
        """Return when the API accepts ``key``; raise InvalidApiKey (with its reason) if not.

        Asks for a training id nobody has: "not found" means the key itself was accepted.
        Transient errors that outlast ``budget`` propagate as they are.
        """
        try:
            await self.fine_tune_status(KEY_CHECK_TRAINING_ID, key, budget=budget)
        except TrainingNotFound:
            return

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.info("status attempt %d failed (%s); retry in %.1fs", state.attempt_number, exc, sleep)

    async def attempt(
        self, training_id: str, key: str, deadline: float | None = None
    ) -> TrainingStatus:
        """One request, no retry (the tracker's path, thousands of times a cycle).

        Every ``await`` between a worker and the socket is resumed at each step of a request,
        so this path awaits aiohttp and the semaphores directly: no context-manager coroutines.
        """
        training_id = validate_training_id(training_id)
        timeout = self._timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise ApiUnavailable(UNREACHABLE, detail="no time left for the request")
        # The id is validated (only [A-Za-z0-9_-]): already encoded as it is.
        url = self._url_of(training_id)
        payload = self._bodies.get(key)
        if payload is None:
            if len(self._bodies) >= BODY_CACHE_ENTRIES:
                self._bodies.clear()
            # Encoded here, its type given by the payload: aiohttp's json= goes through a
            # general-purpose encoder, and a headers= mapping is merged into the request's own
            # headers at a cost of its own.
            payload = self._bodies[key] = aiohttp.BytesPayload(
                f'{{"key": {json.dumps(key)}}}'.encode(), content_type="application/json"
            )
        # Per key first: a request waiting for its busy key must not hold a global slot.
        key_slots = self._key_semaphore(key)
        await key_slots.acquire()
        try:
            await self._overall.acquire()
            try:
                response = await self._session.post(
                    url,
                    data=payload,
                    timeout=(
                        self._client_timeout
                        if deadline is None
                        else aiohttp.ClientTimeout(total=timeout)
                    ),
                    allow_redirects=False,
                )
                try:
                    body = await response.read()
                    retry_after = _retry_after_header(response.headers.get("Retry-After"))
                    status = response.status
                finally:
                    # What leaving ``async with response`` does.
                    response.release()
                    await response.wait_for_close()
            except TimeoutError:
                raise ApiUnavailable(
                    UNREACHABLE, detail=f"timed out after {timeout:.1f}s for {training_id}"
                ) from None
            except aiohttp.ClientError as exc:
                raise ApiUnavailable(
                    UNREACHABLE, detail=f"{type(exc).__name__} for {training_id}"
                ) from None
            finally:
                self._overall.release()
        finally:
            key_slots.release()
        memo_key = (status, body)
        parsed = self._parsed.get(memo_key)
        if parsed is not None:
            return parsed
        try:
            parsed = parse_status(status, body)
        except SdApiError as exc:
            # Error details quote the body; never let an echoed key reach a log line.
            if key and key in exc.detail:
                exc.detail = exc.detail.replace(key, "[key]")
            if key and key in exc.user_message:
                exc.user_message = exc.user_message.replace(key, "[key]")
            raise self._refine(exc, training_id, retry_after) from None
        if len(body) <= PARSE_MEMO_MAX_BODY:
            if len(self._parsed) >= PARSE_MEMO_ENTRIES:
                self._parsed.clear()
            self._parsed[memo_key] = parsed
        return parsed

    @staticmethod
    def _refine(exc: SdApiError, training_id: str, retry_after: float | None) -> SdApiError:
        """Add what only the client knows: the Retry-After header, the training id."""
        if isinstance(exc, RateLimited) and retry_after is not None:
            return RateLimited(retry_after, detail=exc.detail)
        if isinstance(exc, TrainingNotFound):
            return TrainingNotFound(
                f"The Stable Diffusion API does not know training `{training_id}`; check the id "
                "and that the training was created with this API key.",
                detail=exc.detail,
            )
        return exc
