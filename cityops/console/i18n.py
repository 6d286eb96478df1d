"""Console language: zh-CN first, English on request.

Texts are written in place as ``t("待受理", "To accept")`` — the Chinese text and its English
translation side by side — so a page never shows a missing key. The language is per browser
(``app.storage.user["lang"]``), switched in the header.
"""

from __future__ import annotations

from nicegui import app

LANGS = ("zh", "en")


def lang() -> str:
    try:
        value = app.storage.user.get("lang", "zh")
    except (AssertionError, RuntimeError, KeyError):  # outside a page (jobs, tests)
        return "zh"
    return value if value in LANGS else "zh"


def set_lang(value: str) -> None:
    app.storage.user["lang"] = value if value in LANGS else "zh"


def t(zh: str, en: str) -> str:
    """The text in the user's language."""
    return en if lang() == "en" else zh
