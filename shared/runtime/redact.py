"""Keep URLs' secrets out of logs, errors and status output.

A webhook URL carries its signature in the query (`sig=`, Workflows) or in the path (retired Office 365
connector URLs: `https://<tenant>.webhook.office.com/webhookb2/<secret>/...`). So everything after the host is
removed, wherever a URL shows up: our messages, and the records urllib3 and azure-core log when they retry,
which print the request path on its own (`... broken by '...': /webhookb2/<secret>/...`).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
# A request path printed without its scheme and host (urllib3: "... : /path?q", "POST /path HTTP/1.1",
# "Max retries exceeded with url: /path"): a slash right after a space, quote or colon.
_BARE_PATH = re.compile(r"(?<=[\s'\"(=:])/(?![/\s])[^\s'\"<>`)]*")
# The loggers that print request URLs or paths: urllib3 (our Teams posts, and azure-core's transport) and
# azure-core's pipeline logging. A logger's filter applies only to records logged on that very logger.
LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.core.pipeline.policies._universal",
    "azure.core.pipeline.policies._retry",
    "azure.core.pipeline.transport._requests_basic",
)


def redact_url(url: str) -> str:
    """Scheme, host and a short fingerprint: enough to tell webhooks apart, nothing to replay."""
    from shared.runtime.hits import short_hash

    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: show nothing of it
        scheme, host = url.split(":", 1)[0] if "://" in url else "", None
    return f"{scheme or '?'}://{host or '?'}/…#{short_hash(url)}"


def redact_text(text: str, *, bare_paths: bool = False) -> str:
    """Every URL in `text` as its redacted form; with bare_paths (HTTP libraries' log records, which print
    request paths alone), every path after a space, quote or colon as `/…`."""
    text = _URL.sub(lambda m: _redact_match(m.group()), text)
    return _BARE_PATH.sub("/…", text) if bare_paths else text


def _redact_match(url: str) -> str:
    try:
        parts = urlsplit(url)
        bare = not parts.path.strip("/") and not parts.query and not parts.fragment and not parts.username
    except ValueError:
        bare = False
    # A bare origin (https://api.loganalytics.io) says where, and holds nothing to hide.
    return url if bare else redact_url(url)


class RedactUrls(logging.Filter):
    """Rewrites a record's message with redact_text (after formatting, so arguments are covered too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        record.msg = redact_text(message, bare_paths=True)
        record.args = ()
        return True


_FILTER = RedactUrls()


def install() -> None:
    """Attach the filter to the loggers that print URLs (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
