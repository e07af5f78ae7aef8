"""Static files the pages use, all served from this host: GC Design System, its fonts, the portal's own.

GCDS is installed from npm by `make install` into `node_modules/` at the project root. Its
stylesheet imports Google Fonts and loads its icon font from a CDN; a resident's browser must
not ask any other host for anything, so the stylesheet is rewritten once at start-up to use the
fonts of `@gcds-core/fonts`, served here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "node_modules"
GCDS_DIST = NODE_MODULES / "@gcds-core" / "components" / "dist" / "gcds"
GCDS_FONTS = NODE_MODULES / "@gcds-core" / "fonts" / "fonts"
OWN_STATIC = Path(__file__).resolve().parent / "static"

ASSETS_PREFIX = "/assets"
GCDS_URL = f"{ASSETS_PREFIX}/gcds"
FONTS_URL = f"{ASSETS_PREFIX}/gcds-fonts"
OWN_URL = f"{ASSETS_PREFIX}/portal"

MISSING_MESSAGE = (
    "The GC Design System is not installed (node_modules/@gcds-core is missing): run `make install`."
)

_GOOGLE_IMPORT = re.compile(r"@import\s+url\(\s*[\"']?https?://fonts\.googleapis\.com[^)]*\)\s*;")
_CDN_TTF = re.compile(
    r"url\(\s*[\"']?https?://cdn\.design-system\.canada\.ca/[^)]*\.ttf[\"']?\)\s*format\([^)]*\)\s*,?"
)
_CDN_FONTS = re.compile(r"https?://cdn\.design-system\.canada\.ca/@gcds-core/fonts@[^/]+/")
_REMOTE_URL = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])https?://", re.IGNORECASE)
# The font files each font's CSS names with a placeholder folder.
_FONT_PLACEHOLDERS = ("path/to/file/", "<path-to-file>/")


@dataclass(frozen=True)
class Assets:
    """What the pages link to, prepared at start-up."""

    available: bool
    gcds_css: str
    fonts_css: str


def local_gcds_css(css: str) -> str:
    """GCDS's stylesheet with every remote font replaced by this host's copy.

    Raises:
        ValueError: a remote URL is still left (a new GCDS version loads something else).
    """
    css = _GOOGLE_IMPORT.sub("", css)
    # The icons package ships no .ttf; the .woff beside it in the same rule is enough.
    css = _CDN_TTF.sub("", css)
    css = _CDN_FONTS.sub(f"{FONTS_URL}/", css)
    if _REMOTE_URL.search(css):
        raise ValueError("the GCDS stylesheet still loads something from another host")
    return css


def local_fonts_css(fonts: Path) -> str:
    """The `@font-face` rules of Lato and Noto Sans, pointing at this host's font files."""
    parts = []
    for name in ("lato/gcds-lato.css", "noto-sans/gcds-noto-sans.css"):
        css = (fonts / name).read_text(encoding="utf-8")
        folder = f"{FONTS_URL}/{name.split('/', 1)[0]}/"
        for placeholder in _FONT_PLACEHOLDERS:
            css = css.replace(placeholder, folder)
        parts.append(css)
    return "\n".join(parts)


def load_assets() -> Assets:
    """Read and rewrite the stylesheets; `available` is False when `make install` has not run."""
    stylesheet = GCDS_DIST / "gcds.css"
    if not stylesheet.is_file() or not GCDS_FONTS.is_dir():  # read at call time: tests move them
        return Assets(available=False, gcds_css="", fonts_css="")
    return Assets(
        available=True,
        gcds_css=local_gcds_css(stylesheet.read_text(encoding="utf-8")),
        fonts_css=local_fonts_css(GCDS_FONTS),
    )
