"""Fetching media named by URL, safely: the one place vlserve reaches the network or the disk for a request.

A URL in a chat request is chosen by the caller, so fetching it is a server-side request forgery risk (vLLM's
CVE-2025-6242): it could reach this machine's services, the local network, or a cloud metadata endpoint. So, by
default:

- http(s) only to public addresses: every address the name resolves to must be public (not loopback, private,
  link-local (169.254/16: metadata), multicast, reserved or unspecified; IPv4 embedded in IPv6 is unwrapped),
  checked after DNS resolution, and the connection goes to the checked address (the Host header and TLS SNI keep
  the name), so a second DNS answer cannot swap in another address (DNS rebinding);
- redirects are followed by hand, each hop checked the same way; at most `max_redirects`;
- one deadline for the whole fetch, and a byte limit counted while reading;
- no proxies from the environment (they would bypass the address pin);
- `file://` only under folders the operator allowed.

`allow_private` (trusted setups) lifts the address check; `allow_domains` narrows http(s) to listed domains.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from vlserve.errors import InvalidRequest

# host, port -> the addresses it resolves to (the system resolver; tests substitute their own)
Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class MediaPolicy:
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    allow_private: bool = False
    allow_domains: tuple[str, ...] = ()
    allow_dirs: tuple[Path, ...] = ()
    max_redirects: int = 3


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped, 6to4, or NAT64 (64:ff9b::/96)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(address: str) -> str | None:
    """Why a fetch must not connect to `address`, or None when it is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    ip = _embedded_ipv4(ip) or ip  # the IPv6 form only carries it
    for kind, flag in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{address} is a {kind} address"
    return None if ip.is_global else f"{address} is not a public address"


def domain_allowed(host: str, domains: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains))


@dataclass(frozen=True)
class _Target:
    """Where to connect for one hop: the URL with the checked address as its host, and the name to present."""

    url: httpx.URL
    host_header: str
    sni: str


class MediaFetcher:
    """`await fetcher(url) -> bytes` for http(s) and file URLs, under a `MediaPolicy`."""

    def __init__(self, policy: MediaPolicy = MediaPolicy(), resolve: Resolver = system_resolve) -> None:
        self.policy = policy
        self.resolve = resolve

    async def __call__(self, url: str) -> bytes:
        if url.split(":", 1)[0].lower() == "file":
            return await asyncio.to_thread(self._read_file, url)
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._fetch_http(url)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise InvalidRequest(f"fetching {_short(url)} timed out after {self.policy.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"fetching {_short(url)} failed: {exc}") from exc

    # -- http(s) ------------------------------------------------------------------------------------------------

    async def _fetch_http(self, url: str) -> bytes:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=self.policy.timeout_s) as client:
            for _ in range(self.policy.max_redirects + 1):
                target = await self._target(url)
                request = client.build_request("GET", target.url, headers={"Host": target.host_header},
                                               extensions={"sni_hostname": target.sni})
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = str(httpx.URL(url).join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(f"fetching {_short(url)} answered HTTP {response.status_code}")
                    return await self._read_limited(response, url)
                finally:
                    await response.aclose()
        raise InvalidRequest(f"fetching {_short(url)}: more than {self.policy.max_redirects} redirects")

    async def _target(self, url: str) -> _Target:
        """Check one hop's URL and pick the address to connect to."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidRequest(f"media URL {_short(url)} must be http(s) with a host")
        host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        if self.policy.allow_domains and not domain_allowed(host, self.policy.allow_domains):
            raise InvalidRequest(f"media from {host} is not allowed; this server fetches only from "
                                 f"{', '.join(self.policy.allow_domains)}")  # fmt: skip
        addresses = [host] if _is_ip(host) else await self._resolve(host, port)
        if not self.policy.allow_private:
            for address in addresses:
                if problem := address_problem(address):
                    raise InvalidRequest(f"media URL {_short(url)} is refused: {problem} (the server fetches only "
                                         "from public addresses; an operator can allow others with "
                                         "--allow-private-media)")  # fmt: skip
        host_header = parsed.netloc.decode("ascii").rpartition("@")[2]
        return _Target(parsed.copy_with(host=addresses[0]), host_header, host)

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            addresses = await self.resolve(host, port)
        except OSError as exc:
            raise InvalidRequest(f"media host {host} does not resolve: {exc}") from exc
        if not addresses:
            raise InvalidRequest(f"media host {host} does not resolve")
        return addresses

    async def _read_limited(self, response: httpx.Response, url: str) -> bytes:
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(url, limit)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _too_large(url, limit)
        return bytes(body)

    # -- file ---------------------------------------------------------------------------------------------------

    def _read_file(self, url: str) -> bytes:
        if not self.policy.allow_dirs:
            raise InvalidRequest("file:// media is off on this server; send a data URI or an http(s) URL "
                                 "(an operator can allow folders with --media-allow-dir)")  # fmt: skip
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise InvalidRequest(f"file URL {_short(url)} must name a local path (file:///...)")
        try:
            path = Path(unquote(parts.path)).resolve(strict=True)
        except (OSError, RuntimeError):
            raise InvalidRequest(f"file {_short(url)} does not exist") from None
        if not any(path.is_relative_to(Path(d).resolve()) for d in self.policy.allow_dirs) or not path.is_file():
            raise InvalidRequest(f"file {_short(url)} is not in a folder this server may read media from")
        with path.open("rb") as handle:
            data = handle.read(self.policy.max_bytes + 1)
        if len(data) > self.policy.max_bytes:
            raise _too_large(url, self.policy.max_bytes)
        return data


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _too_large(url: str, limit: int) -> InvalidRequest:
    return InvalidRequest(f"{_short(url)} is larger than the media limit of {limit} bytes")


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
