"""One HTTP layer for every provider: timeouts, retries with backoff and jitter, rate limits, a budget.

Errors come out as `ProviderError` with a sentence a person can act on; connectors add the
provider-specific advice through `explain`.
"""

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


class ProviderError(Exception):
    """A provider call failed in a way the sync cannot work around. `str()` is shown to admins."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """The provider asks us to stop for longer than we wait inside one run: resume next run."""


class BudgetExhausted(ProviderError):
    """This organization's request budget for the run is spent: resume next run."""


@dataclass
class RequestBudget:
    """How many requests one sync run of one organization may make (protects shared quotas)."""

    limit: int
    used: int = 0

    def spend(self) -> None:
        if self.used >= self.limit:
            raise BudgetExhausted(
                f"stopped after {self.used} requests, this organization's budget per sync; "
                "the next run continues where this one stopped"
            )
        self.used += 1


def _retry_after_seconds(response: httpx.Response, reset_header: str | None) -> float | None:
    value = response.headers.get("Retry-After")
    if value:
        if value.strip().isdigit():
            return float(value)
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())
    if reset_header and response.headers.get(reset_header):
        reset = float(response.headers[reset_header])
        # Either an epoch timestamp (Intercom's X-RateLimit-Reset) or seconds from now.
        return max(0.0, reset - time.time()) if reset > 1_000_000_000 else reset
    return None


class ProviderClient:
    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: dict | None = None,
        auth: httpx.Auth | tuple | None = None,
        budget: RequestBudget,
        explain: Callable[[int, str], str] | None = None,
        reset_header: str | None = None,
        timeout: float = 20.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_rate_limit_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.provider = provider
        self.budget = budget
        self.explain = explain or (lambda status, body: f"{provider} answered {status}")
        self.reset_header = reset_header
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_rate_limit_wait = max_rate_limit_wait
        self.sleep = sleep
        self.http = httpx.Client(base_url=base_url, headers=headers or {}, auth=auth, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads the retries of many organizations hitting one provider.
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        failures = 0
        rate_limited = 0
        while True:
            self.budget.spend()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                failures += 1
                if failures > self.max_retries:
                    raise ProviderError(
                        f"{self.provider} could not be reached after {failures} tries ({type(error).__name__}); "
                        "the next run retries"
                    ) from error
                self.sleep(self._backoff(failures))
                continue
            if response.status_code == 429:
                rate_limited += 1
                wait = _retry_after_seconds(response, self.reset_header)
                if wait is None:
                    wait = self._backoff(rate_limited)
                if wait > self.max_rate_limit_wait or rate_limited > self.max_retries:
                    raise RateLimited(
                        f"{self.provider} is rate limiting this account (asked to wait {wait:.0f} s); "
                        "the next run continues where this one stopped",
                        status=429,
                    )
                log.info("%s rate limit: waiting %.1f s", self.provider, wait)
                self.sleep(wait)
                continue
            if response.status_code >= 500:
                failures += 1
                if failures > self.max_retries:
                    raise ProviderError(
                        f"{self.provider} kept failing ({response.status_code}) after {failures} tries; "
                        "the data synced before stays, and the next run retries",
                        status=response.status_code,
                    )
                self.sleep(self._backoff(failures))
                continue
            if response.status_code >= 400:
                raise ProviderError(
                    self.explain(response.status_code, response.text[:2000]), status=response.status_code
                )
            return response

    def json(self, method: str, url: str, **kwargs):
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError as error:
            raise ProviderError(
                f"{self.provider} sent a page that is not valid JSON ({url}); nothing from it was saved, "
                "and the next run reads it again"
            ) from error
