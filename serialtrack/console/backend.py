"""The four services, as the signed-in user: every call carries that user's token, so each service
decides what the user may see (401, 403, 404 as if absent, customer data shaped by role) and the
console shows what comes back. A service that does not answer is reported by name, and the rest
of the page still works."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import httpx

from services.registry import INSTALLED
from shared.settings import Settings

TIMEOUT_S = 5.0


def service_urls(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``<SERVICE>_URL`` (a container reaches ``http://inventory:8001``), else the service's port on
    this machine, as the CLI finds it."""
    env = os.environ if env is None else env
    return {name: env.get(f"{name.upper()}_URL") or settings.service_url(name) for name in INSTALLED}


class ServiceDown(Exception):
    def __init__(self, service: str, url: str, why: str):
        super().__init__(f"{service} does not answer at {url} ({why})")
        self.service, self.url = service, url


class Refused(Exception):
    """401 (the token stopped working: revoked or expired), 403 (the role may not), or a 400 (the
    input): the service's own words, for the page to show."""

    def __init__(self, service: str, status: int, detail: str):
        super().__init__(f"{service} answered {status}: {detail}")
        self.service, self.status, self.detail = service, status, detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
    return str(detail or body)[:300]


class Backend:
    def __init__(self, urls: dict[str, str], timeout: float = TIMEOUT_S):
        self.urls = urls
        self._client = httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def get(self, token: str, service: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """The JSON answer, or None for 404 (unknown, or another manufacturer's)."""
        url = self.urls[service] + path
        try:
            response = await self._client.get(url, params={k: v for k, v in (params or {}).items()
                                                            if v not in (None, "")},
                                               headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise ServiceDown(service, self.urls[service], type(exc).__name__) from None
        if response.status_code == 404:
            return None
        if response.status_code in (400, 401, 403, 422):
            raise Refused(service, response.status_code, _detail(response))
        if response.status_code >= 500:
            raise ServiceDown(service, self.urls[service], f"HTTP {response.status_code}")
        return response.json()

    async def gather(self, token: str,
                     calls: Mapping[str, tuple[str, str, Mapping[str, Any] | None]]) -> dict[str, Any]:
        """Several calls at once: name -> answer, or the ServiceDown / Refused it raised."""
        results = await asyncio.gather(*(self.get(token, *call) for call in calls.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, (ServiceDown, Refused)):
                raise result
        return dict(zip(calls, results, strict=True))

    async def open_stream(self, token: str, service: str, path: str,
                          params: Mapping[str, Any] | None = None) -> httpx.Response:
        """A download to pass through as it comes (a recall report of a million serials); the caller
        closes it (``aclose``)."""
        request = self._client.build_request(
            "GET", self.urls[service] + path, params={k: v for k, v in (params or {}).items() if v not in (None, "")},
            headers={"Authorization": f"Bearer {token}"})
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceDown(service, self.urls[service], type(exc).__name__) from None

    async def health(self) -> dict[str, bool]:
        """Which services answer /healthz (open, no token): the banner of a page names the ones down."""
        async def up(url: str) -> bool:
            try:
                return (await self._client.get(f"{url}/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False
        answers = await asyncio.gather(*(up(url) for url in self.urls.values()))
        return dict(zip(self.urls, answers, strict=True))
