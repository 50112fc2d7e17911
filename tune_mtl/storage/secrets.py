"""Keep secrets out of printed output and result files.

A database URL may carry a password (`postgresql://user:PASSWORD@host/db`, or `?password=` in the query);
every URL this project prints or saves goes through `mask_url` first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

MASK = "***"
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "secret", "token", "key", "api_key", "access_key", "secret_key"}


def mask_url(url: str) -> str:
    """The URL with its password (user info or query parameter) replaced by ***; other text unchanged."""
    if "://" not in url:
        return url
    # String surgery rather than urlunsplit, which rewrites 'sqlite:///path' forms with an empty host.
    scheme, rest = url.split("://", 1)
    authority, sep, tail = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    path, qmark, query = tail.partition("?")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*/:")
    return f"{scheme}://{authority}{sep}{path}{qmark}{query}"


def is_masked(url: str) -> bool:
    return MASK in url
