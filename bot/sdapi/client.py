"""The one place that talks HTTP to the Stable Diffusion API, for both status endpoints.

v3: ``POST {base_url}/fine_tune_status/{id}``; v6: ``POST {v6_base_url}/trainer/status/{uuid}``;
both with ``{"key": ...}``. Which one a training uses is ``api_for(training_id)`` unless the
caller forces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from email.utils import parsedate_to_datetime
from enum import StrEnum

import aiohttp
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
    InvalidApiKey,
    InvalidTrainingId,
    NoCredits,
    RateLimited,
    ResponseTooLarge,
    SdApiError,
    TrainingNotFound,
)
from bot.sdapi.status import UUID_RE, Api, TrainingStatus, api_for, parse_status

log = logging.getLogger(__name__)

DEFAULT_V6_BASE_URL = "https://modelslab.com/api/v6"
TRAINING_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_RETRY_AFTER = 86_400.0
# A status answer is a few KB; a broken proxy or a captive portal may send without end.
MAX_BODY_BYTES = 1 << 20
# A training id no one has: asking for it tells whether the API accepts a key.
KEY_CHECK_TRAINING_ID = "tunewatch-key-check"
# Keys made of these characters appear verbatim inside a JSON string; others may be escaped.
_VERBATIM_IN_JSON_RE = re.compile(r"[A-Za-z0-9_.~+=:-]*")
_KEY_MASK = b"[key]"
# Parsed answers kept by body: at most this many, of at most this size each (a few MB at most).
PARSE_MEMO_ENTRIES = 1024
PARSE_MEMO_MAX_BODY = 4096
# Request bodies kept by key (see SdApiClient._bodies); the cache starts over when full.
BODY_CACHE_ENTRIES = 256


class KeyCheck(StrEnum):
    """What asking the API about a key showed (an invalid key raises InvalidApiKey instead)."""

    VALID = "valid"
    """The API accepted the key."""
    UNVERIFIED = "unverified"
    """The answer proved nothing either way (an outage, a rate limit, an odd answer)."""


def validate_training_id(raw: str, api: Api | None = None) -> str:
    """Return the id stripped of surrounding blanks, or raise InvalidTrainingId.

    A v6 id is a UUID; a v3 id is 1 to 64 letters, digits, ``-`` and ``_``. Without ``api``,
    the id's shape decides (``api_for``), so only a forced v6 can refuse a v3-shaped id.
    """
    return _checked_id(raw, api_for(raw, api))


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


def _key_forms(key: str) -> tuple[bytes, ...]:
    """The bytes a key may take inside a JSON answer: as is, and JSON-escaped if it needs it."""
    if not key:
        return ()
    if _VERBATIM_IN_JSON_RE.fullmatch(key):
        return (key.encode(),)
    escaped = json.dumps(key)[1:-1]
    forms = {key, escaped, escaped.replace("/", "\\/"), json.dumps(key, ensure_ascii=False)[1:-1]}
    return tuple(form.encode() for form in forms)


def _redact(body: bytes, forms: tuple[bytes, ...]) -> bytes:
    """``body`` with every form of the key masked (an API may echo the key)."""
    for form in forms:
        if form in body:
            body = body.replace(form, _KEY_MASK)
    return body


def _checked_id(training_id: str, api: Api) -> str:
    """``validate_training_id`` for an id whose API is decided (the tracker's path)."""
    stripped = training_id.strip()
    pattern = UUID_RE if api is Api.V6 else TRAINING_ID_RE
    if pattern.fullmatch(stripped) is None:
        raise InvalidTrainingId(api.value, length=len(stripped))
    return stripped


class SdApiClient:
    """Training status from both APIs with timeouts, bounded retries, a bounded body size and
    per-key concurrency."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        v6_base_url: str = DEFAULT_V6_BASE_URL,
        timeout: float = 15.0,
        max_concurrency: int = 16,
        max_concurrency_per_key: int = 4,
        max_attempts: int = 4,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._session = session
        self._max_body = max_body_bytes
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
        # parse_status is a pure function of (status, body, api) and TrainingStatus is
        # immutable. Bodies are keyed with the API key masked (see _redact). Measured with
        # callgrind on the poll cycle: without it a poll costs 36 % more instructions.
        self._parsed: dict[tuple[int, Api, bytes], TrainingStatus] = {}
        # The request body of each key, with the forms of the key to mask in answers: every
        # poll with one key sends the same bytes, and aiohttp's bytes payloads are reusable
        # (4.4 % of a poll's instructions). It holds keys as the key ring's cache does, in this
        # process's memory only; a replaced key's entry goes when the cache starts over.
        self._bodies: dict[str, tuple[aiohttp.BytesPayload, tuple[bytes, ...]]] = {}
        self._roots = {Api.V3: self._base_url, Api.V6: v6_base_url.rstrip("/")}

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
        api: Api | None = None,
        budget: float | None = None,
    ) -> TrainingStatus:
        """Ask for one training's status, through ``api`` (default: ``api_for(training_id)``),
        retrying transient errors.

        ``budget`` bounds the total time in seconds, retries and waits included (an
        interaction cannot wait minutes).
        """
        deadline = None if budget is None else time.monotonic() + budget
        stop: stop_base = stop_after_attempt(self._max_attempts)
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
                return await self.attempt(training_id, key, deadline, api=api)
        raise AssertionError("unreachable")  # pragma: no cover

    async def check_key(self, key: str, *, budget: float) -> KeyCheck:
        """Ask the API whether it accepts ``key``, within ``budget`` seconds.

        Asks v3 about a training id nobody has. InvalidApiKey (a 401 or an invalid-key body)
        propagates: the only answer that refuses a key. "Not found", "no credits" or a status
        mean the API took the key (assuming it checks the key before the id, as its documented
        error codes suggest): VALID. Anything else (an outage, a rate limit, an answer nobody
        has documented for a made-up id) proves nothing either way: UNVERIFIED.
        """
        try:
            await self.fine_tune_status(KEY_CHECK_TRAINING_ID, key, api=Api.V3, budget=budget)
        except InvalidApiKey:
            raise
        except (TrainingNotFound, NoCredits):
            return KeyCheck.VALID
        except SdApiError as exc:
            log.info("an API key could not be verified: %s", exc.reason)
            return KeyCheck.UNVERIFIED
        return KeyCheck.VALID

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.info("status attempt %d failed (%s); retry in %.1fs", state.attempt_number, exc, sleep)

    async def attempt(
        self,
        training_id: str,
        key: str,
        deadline: float | None = None,
        *,
        api: Api | None = None,
    ) -> TrainingStatus:
        """One request, no retry (the tracker's path, thousands of times a cycle)."""
        api = api_for(training_id, api)
        training_id = _checked_id(training_id, api)
        timeout = self._timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise ApiUnavailable(detail="no time left for the request")
        # The id is validated (a UUID, or only [A-Za-z0-9_-]): nothing in it needs quoting.
        path = "trainer/status" if api is Api.V6 else "fine_tune_status"
        url = f"{self._roots[api]}/{path}/{training_id}"
        payload, key_forms = self._body_of(key)
        try:
            # Per key first: a request waiting for its busy key must not hold a global slot.
            async with (
                self._key_semaphore(key),
                self._overall,
                self._session.post(
                    url,
                    data=payload,
                    timeout=(
                        self._client_timeout
                        if deadline is None
                        else aiohttp.ClientTimeout(total=timeout)
                    ),
                    allow_redirects=False,
                ) as response,
            ):
                try:
                    body = await self._read_body(response, training_id)
                except ResponseTooLarge:
                    # The rest of the body is not wanted: drop the connection, not drain it.
                    response.close()
                    raise
                retry_after = _retry_after_header(response.headers.get("Retry-After"))
                status = response.status
        except TimeoutError:
            raise ApiUnavailable(
                detail=f"timed out after {timeout:.1f}s for {training_id}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ApiUnavailable(detail=f"{type(exc).__name__} for {training_id}") from None
        # An API may echo the key (error details quote the body, a v6 answer holds a request
        # to copy): it is masked before anything reads the body.
        body = _redact(body, key_forms)
        memo_key = (status, api, body)
        parsed = self._parsed.get(memo_key)
        if parsed is not None:
            return parsed
        try:
            parsed = parse_status(status, body, api)
        except SdApiError as exc:
            raise self._refine(exc, training_id, retry_after) from None
        if len(body) <= PARSE_MEMO_MAX_BODY:
            if len(self._parsed) >= PARSE_MEMO_ENTRIES:
                self._parsed.clear()
            self._parsed[memo_key] = parsed
        return parsed

    def _body_of(self, key: str) -> tuple[aiohttp.BytesPayload, tuple[bytes, ...]]:
        """The request body for a key, and the forms of the key to mask in answers."""
        kept = self._bodies.get(key)
        if kept is None:
            if len(self._bodies) >= BODY_CACHE_ENTRIES:
                self._bodies.clear()
            body = json.dumps({"key": key}).encode()
            payload = aiohttp.BytesPayload(body, content_type="application/json")
            kept = self._bodies[key] = (payload, _key_forms(key))
        return kept

    async def _read_body(self, response: aiohttp.ClientResponse, training_id: str) -> bytes:
        """The body, refused past ``max_body_bytes``: by its Content-Length before reading
        anything, else as soon as the bytes read pass the cap."""
        cap = self._max_body
        try:
            declared = response.content_length
        except ValueError:
            declared = None
        if declared is not None and declared > cap:
            raise ResponseTooLarge(
                cap,
                declared=declared,
                bytes_read=0,
                detail=f"HTTP {response.status}: Content-Length {declared} over {cap} "
                f"for {training_id}",
            )
        if declared is not None and "Content-Encoding" not in response.headers:
            return await response.read()  # exactly `declared` bytes: aiohttp stops there
        # Chunked, close-delimited or compressed (a small Content-Length may inflate): count.
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > cap:
                raise ResponseTooLarge(
                    cap,
                    declared=declared,
                    bytes_read=size,
                    detail=f"HTTP {response.status}: body over {cap} bytes for {training_id}",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _refine(exc: SdApiError, training_id: str, retry_after: float | None) -> SdApiError:
        """Add what only the client knows: the Retry-After header, the training id."""
        if isinstance(exc, RateLimited) and retry_after is not None:
            return RateLimited(
                retry_after,
                detail=exc.detail,
                http_status=exc.http_status,
                api_message=exc.api_message,
            )
        if isinstance(exc, TrainingNotFound):
            exc.training_id = training_id
        return exc
