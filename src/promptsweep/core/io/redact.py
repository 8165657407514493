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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"


def _mask_marker(kind: str) -> str:
    """Where nobody needs to know what was removed (error messages, reports): ``***``."""
    return MASK


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


def redact_url(url: str, *, marker: Callable[[str], str] | None = None) -> str:
    """``url`` with userinfo and secret-looking query values replaced by ``***`` (or what
    ``marker(kind)`` makes of them) and the fragment dropped:
    ``http://u:KEY@h:8080/v1?api_key=K&v=1`` → ``http://***@h:8080/v1?api_key=***&v=1``."""
    mark = marker or _mask_marker
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_unparsable(url, mark)
    if not parts.scheme or not parts.netloc:
        return _redact_unparsable(url, mark)
    netloc = _hostport(parts)
    if "@" in parts.netloc:
        netloc = f"{mark('url-credentials')}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (name, mark(_credential_kind_of(name)) if is_secret_param(name) else value)
                for name, value in pairs
            ],
            safe="*" if marker is None else "*<>:",  # a marker reads as written
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_unparsable(text: str, mark: Callable[[str], str]) -> str:
    # Not a URL we can parse: hide anything that looks like userinfo or a query string.
    text = re.sub(r"//[^/@\s]*@", lambda _: f"//{mark('url-credentials')}@", text)
    return re.sub(r"\?.*$", lambda _: f"?{mark('url-query')}", text)


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


def _credential_kind_of(name: str) -> str:
    """What the value of a secret-looking name is, for a marker: a password or another secret."""
    return "password" if re.search(r"(?i)pass|pwd", name) else "secret"


def _credential_kind(match: re.Match[str]) -> str:
    return _credential_kind_of(match.group("keep"))


#: The one rule for credentials in free text, each with the kind of thing it removes (for a
#: marker that says what was removed): ``PEM`` private keys; header values; ``Bearer``/``Basic``/
#: ``Digest`` credentials; ``name=value`` / ``"name": "value"`` pairs whose name looks secret (as
#: for URL query keys; plain numbers are kept, ``"prompt_tokens": 10`` is a count); and keys whose
#: shape gives them away wherever they stand: cloud key ids (``AKIA…``), provider API keys
#: (``sk-…``, ``ghp_…``, ``xoxb-…``, ``AIza…``, ``glpat-…``) and JSON web tokens. Group ``keep``
#: (if any) stays, the rest of the match is the secret.
_CREDENTIAL_RULES: tuple[tuple[str | Callable[[re.Match[str]], str], re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
        ),
    ),
    (
        "credential",
        re.compile(
            r"(?i)(?P<keep>\b(?:(?:proxy-)?authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)"
            r"\"?\s*[:=]\s*\"?)[^\r\n\"]*"
        ),
    ),
    (
        lambda m: "basic-credentials" if m.group("keep").lower().startswith("basic") else "token",
        re.compile(r"(?i)(?P<keep>\b(?:bearer|basic|digest)\s+)(?!\*\*\*)[A-Za-z0-9._~+/=:-]{4,}"),
    ),
    (
        _credential_kind,
        re.compile(
            rf"(?i)(?P<keep>[A-Za-z0-9_.-]*(?:{_SECRET_NAME})[A-Za-z0-9_.-]*\"?\s*[=:]\s*\"?)"
            r"(?!\*\*\*)(?!\d+(?:[\s&\"',;}<>]|$))[^\s&\"',;}<>]+"
        ),
    ),
    ("cloud-key-id", re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z0-9]{16}\b")),
    (
        "api-key",
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{30,}|glpat-[A-Za-z0-9_-]{20,})"
        ),
    ),
    ("token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
)

#: Personal details: what production data (``promptsweep harvest``) must not copy into files a
#: person commits, beside credentials. Not applied to error messages: a path there is how the
#: user finds the file.
_PERSONAL_RULES: tuple[tuple[str | Callable[[re.Match[str]], str], re.Pattern[str]], ...] = (
    ("email", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    (
        "home-path",
        re.compile(
            r"(?:(?<![\w/])/(?:home|Users)/[^/\s'\"<>:;,]+|\b[A-Za-z]:\\Users\\[^\\\s'\"<>:;,]+|(?<![\w/])~[A-Za-z][\w.-]*)"
        ),
    ),
)


def redaction_marker(kind: str) -> str:
    """What a redacted value becomes where a reader must see what was there: ``<redacted:email>``."""
    return f"<redacted:{kind}>"


def _apply(
    text: str,
    rules: Sequence[tuple[str | Callable[[re.Match[str]], str], re.Pattern[str]]],
    marker: Callable[[str], str],
) -> str:
    for kind, pattern in rules:

        def replace(match: re.Match[str], kind: str | Callable[[re.Match[str]], str] = kind) -> str:
            keep = match.groupdict().get("keep") or ""
            return keep + marker(kind if isinstance(kind, str) else kind(match))

        text = pattern.sub(replace, text)
    return text


def redact_credentials(text: str) -> str:
    """Mask credentials in any form in free text (``_CREDENTIAL_RULES``): ``Authorization: …``
    and similar header values, ``Bearer``/``Basic`` credentials, secret-looking ``key=value``
    pairs and keys recognisable by their shape become ``***``."""
    return _apply(text, _CREDENTIAL_RULES, _mask_marker)


def redact_text(text: str, secrets: Iterable[str | None] = (), *, credentials: bool = True) -> str:
    """Free text (an error message, a server's reply, a command line) with every URL in it
    redacted, credentials in any form masked (``redact_credentials``; not for command lines,
    where ``--objective-token-weight=0.5`` is no secret) and the given secrets scrubbed."""
    text = scrub(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text), secrets)
    return redact_credentials(text) if credentials else text


def redact_personal(text: str) -> str:
    """Text from production (a trace, a log line) fit to be written where people read and commit
    it: the same credential rule as :func:`redact_text`, plus e-mail addresses and home folders,
    each replaced by a marker naming what was removed (``<redacted:email>``), so a person labelling
    the sample knows something was there."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0), marker=redaction_marker), text)
    text = _apply(text, _CREDENTIAL_RULES, redaction_marker)
    return _apply(text, _PERSONAL_RULES, redaction_marker)


def redact_personal_data(value: Any) -> Any:
    """Parsed data (JSON from a trace or a JSONL record) with :func:`redact_personal` applied to
    every string, key and value, and the value of every secret-looking key (``password``,
    ``api_key``, ``token``…, as for URL query keys) replaced whole: in ``{"password": "x"}``
    the text rule sees no ``password=`` to go by. A bare ``key`` is not one (it is usually a
    record's id; a key of a recognisable shape is caught by the text rule anyway).

    Iterative, so nesting as deep as the caller allowed cannot reach the recursion limit."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        item, parent, slot = stack.pop()
        if isinstance(item, str):
            parent[slot] = redact_personal(item)
        elif isinstance(item, Mapping):
            out: dict[str, Any] = {}
            parent[slot] = out
            for key, child in item.items():
                name = redact_personal(str(key))
                if _is_secret_field(name) and isinstance(child, str) and child:
                    out[name] = redaction_marker(_credential_kind_of(name))
                else:
                    out[name] = None
                    stack.append((child, out, name))
        elif isinstance(item, (list, tuple)):
            items: list[Any] = [None] * len(item)
            parent[slot] = items
            stack.extend((child, items, index) for index, child in enumerate(item))
        else:
            parent[slot] = item
    return root[0]


def _is_secret_field(name: str) -> bool:
    return name.strip().lower() != "key" and is_secret_param(name)


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
