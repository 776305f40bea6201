"""A small HTTP client for the vlserve API, used by the CLI. Turns transport and API errors into one-line
messages that say what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


class ClientError(Exception):
    """Something the CLI prints as one line and exits non-zero for."""


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return f"HTTP {response.status_code}: {body}"


@dataclass
class VlserveClient:
    endpoint: str
    api_key: str | None = None
    timeout: float = 60.0
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(base_url=self.endpoint, headers=headers, timeout=self.timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(
                f"no vlserve server answers at {self.endpoint}; start one with `vlserve serve` "
                "or point --endpoint / VLSERVE_ENDPOINT at a running one"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"{method} {path} timed out after {self.timeout:g}s") from exc
        if response.status_code >= 400:
            raise ClientError(_error_message(response))
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def stream_chat(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST a streaming chat completion and yield each SSE chunk as a dict."""
        try:
            with self._http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ClientError(_error_message(r))
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ClientError(chunk["error"].get("message", str(chunk["error"])))
                    yield chunk
        except httpx.ConnectError as exc:
            raise ClientError(f"no vlserve server answers at {self.endpoint}; start one with `vlserve serve`") from exc
