"""What the proxy says and forwards: its own error answers and the headers vLLM receives. Pure.

Errors. Every status nginx produces itself is answered with the body vLLM 0.33 uses for its own
errors (vllm/entrypoints/serve/engine/protocol.py ErrorInfo: message, type, param, code), so a
client parses one shape whoever answered: ``{"error": {"message", "type", "param", "code"}}``.
``type`` is the name the openai client gives the status (openai/_exceptions.py), else the
status phrase as a class name; ``code`` is the HTTP status sent.

Headers. vLLM's uvicorn trusts X-Forwarded-For and X-Forwarded-Proto from 127.0.0.1, which is
where nginx connects from (uvicorn's forwarded_allow_ips default; vLLM 0.33 does not change
it, vllm/entrypoints/launchers/api_server/entry.py). So nginx sets every forwarding header
itself and clears the ones it does not set: a client can never speak for the proxy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus

# Seconds a client should wait before retrying. The openai client honours Retry-After up to
# 120 s (openai/_constants.py MAX_RETRY_AFTER_DELAY) and backs off by itself otherwise.
# A concurrency slot frees when some stream ends, which cannot be predicted: a short wait.
CONCURRENCY_RETRY_AFTER_S = 5

# A draining replica's 503: the load balancer has (or is about to have) stopped sending here, so
# a retry at once lands on another replica.
DRAIN_RETRY_AFTER_S = 1

# Where the JSON error bodies live: internal locations, unreachable from outside.
ERROR_PREFIX = "/.proxy-error/"
ERROR_LOCATION_REGEX = r"^/\.proxy-error/(?<proxy_error>[0-9]+)$"

# Statuses nginx itself can produce in this configuration (499 and 444 send nothing).
# 494-497 are nginx's own codes for header, certificate and plain-HTTP-on-TLS errors; nginx
# sends them as 400.
NGINX_STATUSES = (400, 403, 404, 405, 408, 411, 413, 414, 416, 421, 429, 494, 495, 496, 497,
                  500, 501, 502, 503, 504, 505)
SENT_AS_400 = (494, 495, 496, 497)

_OPENAI_NAMES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}

# Text that is safe inside a single-quoted nginx string that nginx also expands: no quote,
# backslash or `$` (a `$` would start a variable).
_SAFE_TEXT = re.compile(r"^[^'\\$]*$")


def error_type(status: int) -> str:
    """`type` for a status: the openai client's exception name, else e.g. GatewayTimeoutError."""
    if status in _OPENAI_NAMES:
        return _OPENAI_NAMES[status]
    words = re.split(r"[\s-]+", HTTPStatus(status).phrase)
    return "".join(w[:1].upper() + w[1:] for w in words) + "Error"


def error_body(status: int, message: str) -> str:
    """The compact JSON body for `status`; refuses text nginx would not pass through as is."""
    body = json.dumps(
        {"error": {"message": message, "type": error_type(status), "param": None, "code": status}},
        separators=(",", ":"),
    )
    if not _SAFE_TEXT.match(body):
        raise ValueError(f"error text for {status} must not contain ', \\ or $: {message!r}")
    return body


@dataclass(frozen=True)
class ErrorPage:
    """One status's answer: what nginx sends and, for a location name, where it lives."""

    status: int  # the status nginx produced (error_page matches on it)
    sent: int  # the status the client receives
    body: str  # JSON, safe inside '...'
    retry_after_s: int | None = None

    @property
    def location(self) -> str:
        return f"{ERROR_PREFIX}{self.status}"


def error_pages(
    *, body_limit_mib: int, max_streams: int, header_line_kib: int
) -> dict[int, ErrorPage]:
    """The static error answers, by the status nginx produced (429 and 502 vary at runtime:
    see `too_many_requests_bodies` and `bad_gateway_pages`)."""
    messages = {
        400: "The proxy could not read this request (request line, headers or body framing).",
        403: "This path is not served to your address.",
        404: "Not found. The OpenAI-compatible API is under /v1/ (for example "
        "/v1/chat/completions and /v1/models); /health answers without a key.",
        405: "This method is not allowed on this path.",
        408: "The request did not arrive in time: the client stopped sending its headers or body.",
        411: "A request body needs a Content-Length header or chunked transfer encoding.",
        413: f"The request body is larger than the {body_limit_mib} MiB this endpoint accepts.",
        414: f"The request URI is longer than the {header_line_kib} KiB this endpoint accepts.",
        416: "The requested range cannot be served.",
        421: "This connection cannot serve a request for that host.",
        494: f"A request header line is longer than {header_line_kib} KiB, or the headers "
        "together are too large.",
        495: "The client certificate could not be verified.",
        496: "This endpoint expected a client certificate.",
        497: "This port speaks HTTPS: send the request with https://, not http://.",
        500: "The proxy failed while handling this request.",
        501: "This transfer encoding is not supported.",
        503: f"The endpoint is serving its limit of {max_streams} concurrent requests; retry in a "
        "few seconds.",
        504: "The server behind the proxy did not answer in time.",
        505: "This HTTP version is not supported.",
    }
    pages = {}
    for status, message in messages.items():
        sent = 400 if status in SENT_AS_400 else status
        retry = CONCURRENCY_RETRY_AFTER_S if status == 503 else None
        pages[status] = ErrorPage(status, sent, error_body(sent, message), retry)
    return pages


def bad_gateway_pages(max_streams: int) -> tuple[ErrorPage, ErrorPage]:
    """(vLLM unreachable: 502, every upstream slot taken: 503 with Retry-After).

    nginx reports both as 502; it names the upstream group (vllm) instead of an address in
    $upstream_addr when no connection was free (`max_conns`), which is how they are told apart.
    (max_fails=0 on vLLM's server keeps "no live upstreams" from meaning anything else.)
    """
    unreachable = ErrorPage(
        502, 502,
        error_body(502, "The server behind the proxy is not reachable (starting, restarting or "
                        "stopped); retry shortly."),
    )
    full = ErrorPage(
        502, 503,
        error_body(503, f"The endpoint is serving its limit of {max_streams} concurrent requests; "
                        "retry in a few seconds."),
        CONCURRENCY_RETRY_AFTER_S,
    )
    return unreachable, full


def draining_page() -> ErrorPage:
    """A replica in drain mode (serving.replica): 503 with Retry-After for /health (so the load
    balancer takes it out) and for every new API call; streams already running go on."""
    return ErrorPage(
        503, 503,
        error_body(503, "This replica is shutting down and takes no new requests; retry: the load "
                        "balancer sends the retry to another replica."),
        DRAIN_RETRY_AFTER_S,
    )


def rate_retry_after_s(rate_per_minute: int) -> int:
    """Seconds until the rate limit admits one more request (one per 60/rate seconds)."""
    return max(1, -(-60 // rate_per_minute))


def too_many_requests_bodies(
    *, per_client: int, rate_per_minute: int | None
) -> tuple[str, str | None]:
    """429 bodies: (too many at once from one address, over the request rate or None)."""
    concurrency = error_body(
        429,
        f"Too many concurrent requests from your address: at most {per_client} at once. "
        f"Retry after {CONCURRENCY_RETRY_AFTER_S} s.",
    )
    if rate_per_minute is None:
        return concurrency, None
    rate = error_body(
        429,
        f"Rate limit exceeded: {rate_per_minute} requests per minute per address. "
        f"Retry after {rate_retry_after_s(rate_per_minute)} s.",
    )
    return concurrency, rate


def plain_http_bodies(https_url: str | None) -> tuple[str, str]:
    """403 bodies for an API call over plain HTTP: (without, with an Authorization header).

    No redirect: the request (and any key in it) has already crossed in clear text, and a
    client following a 301 would resend it as a GET. The URL is the configured one, never the
    request's Host header.
    """
    where = f"use {https_url}" if https_url else "use https:// with this address"
    base = f"This endpoint is served over HTTPS only: {where}."
    leaked = base + (" The API key sent with this request crossed the network unencrypted: "
                     "replace it.")
    return error_body(403, base), error_body(403, leaked)


# --- headers vLLM receives ----------------------------------------------------------------
# Forwarding headers some proxy, CDN or framework trusts; clients can send every one of them.
# nginx sets the first group itself (headers_to_upstream) and sends none of the second.
CLEARED_HEADERS = (
    "Client-IP", "CF-Connecting-IP", "CF-Connecting-IPv6", "Fastly-Client-IP", "Forwarded-For",
    "Front-End-Https", "Proxy", "Proxy-Authorization", "Proxy-Connection", "True-Client-IP",
    "Via", "X-Appengine-User-IP", "X-Azure-ClientIP", "X-Azure-SocketIP", "X-Client-IP",
    "X-Cluster-Client-IP", "X-Envoy-External-Address", "X-Envoy-Internal",
    "X-Envoy-Original-Path", "X-Forwarded", "X-Forwarded-Client-Cert", "X-Forwarded-Path",
    "X-Forwarded-Prefix", "X-Forwarded-Protocol", "X-Forwarded-Scheme", "X-Forwarded-Server",
    "X-Forwarded-Ssl", "X-Forwarded-Uri", "X-Host", "X-Original-Forwarded-For",
    "X-Original-Host", "X-Original-Method", "X-Original-URI", "X-Original-URL",
    "X-Originating-IP", "X-ProxyUser-IP", "X-Real-Port", "X-Remote-Addr", "X-Remote-IP",
    "X-Rewrite-URL", "X-Scheme", "X-Url-Scheme",
)


def headers_to_upstream(authority: str) -> dict[str, str]:
    """Header -> nginx value for every proxied request. `authority` is the public host[:port]
    clients use (validated by NginxSite); values starting with $ are nginx variables.

    Connection is empty so nginx keeps its HTTP/1.1 connections to vLLM alive.
    """
    own = {
        "Host": authority,
        "Forwarded": f'"for=$remote_addr;host=\\"{authority}\\";proto=$scheme"',
        "X-Forwarded-For": "$remote_addr",
        "X-Real-IP": "$remote_addr",
        "X-Forwarded-Proto": "$scheme",
        "X-Forwarded-Host": authority,
        "X-Forwarded-Port": "$server_port",
        "Connection": '""',
    }
    return {**own, **{name: '""' for name in CLEARED_HEADERS}}
