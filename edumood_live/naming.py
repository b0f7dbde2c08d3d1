"""Names of sources as they appear in logs, rows and views: credentials masked, repeats told apart.

Standard library only, so the sources, the sinks, the offline report and the cluster driver can all
use the one copy.
"""

from __future__ import annotations

import re

# the userinfo of a URL anywhere in a text: //user:password@ or //token@
_USERINFO_RE = re.compile(r"//([^/@\s:]*)(:[^/@\s]*)?@")


def redact_url(text: str) -> str:
    """`text` with URL credentials masked: ``rtsp://user:pw@cam`` -> ``rtsp://user:***@cam``, and a bare
    token (``rtsp://token@cam``) -> ``rtsp://***@cam``; safe to log, write and show."""

    def mask(match: re.Match[str]) -> str:
        return f"//{match[1]}:***@" if match[2] is not None else "//***@"

    return _USERINFO_RE.sub(mask, text)


def unique_names(names: list[str]) -> list[str]:
    """Source names made unique with a ``#2``, ``#3`` suffix where they repeat."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result
