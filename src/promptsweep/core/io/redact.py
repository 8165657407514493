"""One redaction rule for secrets: endpoint URLs, command lines, messages, and text shown to people.

A URL can carry credentials two ways: userinfo (``http://user:KEY@host``) and query parameters
(``?api_key=KEY``). Whatever leaves the process (config.json, leaderboard.json, reports,
summaries, the cache's model column, spans, terminal lines, error messages) goes through
``redact_url`` / ``redact_text``; the transport keeps the original URL to make requests.

Also here, because they are the same kind of problem (text from files, servers and models
reaching a reader): ``markdown_text`` for ``summary.md`` and ``terminal_text`` for the terminal.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from urllib.parse import SplitResult, parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"

#: Query parameter names that look like they carry a secret (matched as substrings of the
#: lower-cased name, so ``api_key``, ``x-api-key``, ``subscription-key``, ``access_token``,
#: ``sig``, ``signature``, ``password`` … are all caught). ``api-version`` and the like are kept.
SECRET_PARAM_PARTS = (
    "key",
    "token",
    "auth",
    "pass",
    "pwd",
    "secret",
    "sig",
    "cred",
    "session",
    "jwt",
    "bearer",
    "cookie",
)

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_MIN_SECRET_LEN = 4


def is_secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_PARAM_PARTS)


def _hostport(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port is not None else host


def redact_url(url: str) -> str:
    """``url`` with userinfo and secret-looking query values replaced by ``***`` and the
    fragment dropped: ``http://u:KEY@h:8080/v1?api_key=K&v=1`` → ``http://***@h:8080/v1?api_key=***&v=1``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_unparsable(url)
    if not parts.scheme or not parts.netloc:
        return _redact_unparsable(url)
    netloc = _hostport(parts)
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, MASK if is_secret_param(name) else value) for name, value in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_unparsable(text: str) -> str:
    # Not a URL we can parse: hide anything that looks like userinfo or a query string.
    text = re.sub(r"//[^/@\s]*@", f"//{MASK}@", text)
    return re.sub(r"\?.*$", f"?{MASK}", text)


def url_origin(url: str) -> str:
    """``scheme://host:port`` with the default port filled in: an endpoint's identity without
    its credentials or path, e.g. for cache keys of servers that do not name their model."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return redact_url(url)
    scheme = (parts.scheme or "http").lower()
    if port is None:
        port = 443 if scheme == "https" else 80
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (userinfo, secret query values), to scrub from any text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        # With a password the user name is not secret; without one, the "user" is the key.
        found.extend([userinfo, unquote(password)] if password else [unquote(user)])
        # What basic auth sends (base64 of it is scrubbed too): a server may echo the header.
        found.append(f"{unquote(user)}:{unquote(password)}")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_param(name):
            found.append(value)
    return [s for s in found if len(s) >= _MIN_SECRET_LEN]


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every known secret (and its URL-encoded and base64 forms, as a server
    echoing an ``Authorization: Basic`` header would show ``user:KEY``) replaced by ``***``."""
    variants: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LEN:
            encoded = base64.b64encode(secret.encode()).decode()
            variants.update(
                {secret, quote(secret, safe=""), quote_plus(secret), encoded, encoded.rstrip("=")}
            )
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return text


_SECRET_NAME = "|".join(SECRET_PARAM_PARTS)
#: Credentials as they appear in text a server sends back (an error body echoing the request),
#: whatever the key is: header values, ``Bearer``/``Basic``/``Digest`` credentials, and
#: ``name=value`` / ``"name": "value"`` pairs whose name looks secret (as for URL query keys).
_CREDENTIAL_PATTERNS = (
    re.compile(
        r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)"
        r"(\"?\s*[:=]\s*\"?)[^\r\n\"]*"
    ),
    re.compile(r"(?i)\b(bearer|basic|digest)(\s+)(?!\*\*\*)[A-Za-z0-9._~+/=:-]{4,}"),
    re.compile(
        rf"(?i)([A-Za-z0-9_.-]*(?:{_SECRET_NAME})[A-Za-z0-9_.-]*)(\"?\s*[=:]\s*\"?)(?!\*\*\*)(?!\d+(?:[\s&\"',;}}<>]|$))[^\s&\"',;}}<>]+"
    ),
)


def redact_credentials(text: str) -> str:
    """Mask credentials in any form in free text: ``Authorization: …`` and similar header values,
    ``Bearer``/``Basic`` credentials and secret-looking ``key=value`` pairs become ``***``
    (plain numbers are kept: ``"prompt_tokens": 10`` is a count, not a key)."""
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


def redact_text(text: str, secrets: Iterable[str | None] = (), *, credentials: bool = True) -> str:
    """Free text (an error message, a server's reply, a command line) with every URL in it
    redacted, credentials in any form masked (``redact_credentials``; not for command lines,
    where ``--objective-token-weight=0.5`` is no secret) and the given secrets scrubbed."""
    text = scrub(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text), secrets)
    return redact_credentials(text) if credentials else text


SECRET_OPTIONS = ("--llm-api-key",)


def redact_argv(args: Sequence[str], secret_options: Sequence[str] = SECRET_OPTIONS) -> list[str]:
    """A command line fit for provenance files: values of secret options become ``***`` and
    URLs anywhere in it are redacted (``--llm-url``, ``-o llm_url=…``)."""
    redacted: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            redacted.append(MASK)
            hide_next = False
        elif arg in secret_options:
            redacted.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{name}=" for name in secret_options)):
            redacted.append(arg.split("=", 1)[0] + "=" + MASK)
        else:
            redacted.append(redact_text(arg, credentials=False))
    return redacted


# ----------------------------------------------------------------------------- text for readers

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HTML_START = re.compile(r"<(?=[A-Za-z/!?])|&(?=[#A-Za-z])")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def terminal_text(text: str) -> str:
    """Text from data or a model made safe to print: control characters (ANSI escapes, OSC
    sequences that could rewrite the terminal or its clipboard) become ``?``."""
    return _CONTROL.sub("?", text)


def markdown_text(text: str) -> str:
    """Text from data or a model made inert in GitHub Markdown (``summary.md`` goes to
    ``$GITHUB_STEP_SUMMARY``): anything that could open an HTML tag or entity is escaped,
    Markdown punctuation (links, emphasis, code, table pipes) is backslash-escaped,
    and line breaks become spaces so a value stays in its table cell."""
    text = " ".join(terminal_text(text).split())
    # Only what could start a tag, comment or entity is escaped, so "0.61 < 0.70" stays readable.
    text = _HTML_START.sub(lambda m: html.escape(m.group(0), quote=False), text)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
