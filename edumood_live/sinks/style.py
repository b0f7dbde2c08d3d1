"""How classes and sources look in every output: the console, the annotated video and the HTML report.

Standard library only: the offline report imports it too.
"""

from __future__ import annotations

from edumood_live.naming import redact_url

# Okabe-Ito based, colour-blind safe; the same colour for a class in the console, video and report.
CLASS_COLOURS = {"angry": "#D55E00", "neutral": "#999999", "engaged": "#009E73", "bored": "#56B4E9"}
_FALLBACK_COLOURS = ("#0072B2", "#E69F00", "#CC79A7", "#F0E442", "#000000")
GAP_COLOUR = "#E4E4E4"  # light, hatched: reads as "nothing here", unlike Neutral's solid grey
WITHHELD_COLOUR = "#E8DDF0"


def class_colour(label: str, index: int = 0) -> str:
    """Hex colour of a class: fixed for the four EduMood classes, else by its index."""
    return CLASS_COLOURS.get(label.lower(), _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)])


def safe_source_name(source: str) -> str:
    """Source name with any URL credentials masked (`naming.redact_url`), for views and reports."""
    return redact_url(source)
