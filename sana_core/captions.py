"""Caption cleaning, as the training captions were cleaned (the reference pipeline's ``clean_caption`` option).

``clean(text)`` runs the cleaning pass twice. One pass: URL-decode and lowercase; drop URLs; strip HTML tags
(beautifulsoup4); drop @handles and CJK ideographs, strokes and symbols; unify dashes and quotes; drop HTML
entities, IP addresses, article numbers, "#123" tags, long numbers and file names; collapse repeated quotes and
dots; turn stray punctuation into spaces; split words joined by more than three dashes or underscores; repair
mis-decoded text (ftfy) and unescape entities; drop product codes, shipping / download / "click for" boilerplate,
page numbers and sizes such as "1920x1080"; tidy spaces and the punctuation at both ends.

beautifulsoup4 and ftfy are optional: they are imported only here, when cleaning is asked for.
"""

from __future__ import annotations

import html
import re
import urllib.parse

from .errors import SanaError

_EXT = "png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4"
_SITE = r"[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)"
# CJK strokes, katakana phonetic extensions, enclosed CJK, CJK compatibility, CJK extension A, hexagrams, CJK
_CJK = "\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff"
_DASHES = ("\u002d\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u301c\u3030\u30a0\ufe31\ufe32"
           "\ufe58\ufe63\uff0d")
_STRAY = r"[#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\\/\*]{1,}"

# (pattern, replacement), applied in order; the three lists run before the HTML is stripped, before the text is
# repaired, and after it.
_BEFORE_HTML = [
    (r"<person>", "person"),
    (rf"\b((?:https?:(?:\/{{1,3}}|[a-zA-Z0-9%])|{_SITE}))", ""),  # URLs
    (rf"\b((?:www:(?:\/{{1,3}}|[a-zA-Z0-9%])|{_SITE}))", ""),
]
_BEFORE_REPAIR = [
    (r"@[\w\d]+\b", ""),  # @handles
    (f"[{_CJK}]+", ""),
    (f"[{_DASHES}]+", "-"),
    (r"[`´«»“”¨]", '"'),
    (r"[‘’]", "'"),
    (r"&quot;?", ""),
    (r"&amp", ""),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),  # IP addresses
    (r"\d:\d\d\s+$", ""),  # article numbers at the end
    (r"\\n", " "),  # a literal backslash-n
    (r"#\d{1,3}\b", ""),
    (r"#\d{5,}\b", ""),
    (r"\b\d{6,}\b", ""),
    (rf"[\S]+\.(?:{_EXT})", ""),  # file names
    (r"[\"\']{2,}", '"'),
    (r"[\.]{2,}", " "),
    (_STRAY, " "),
    (r"\s+\.\s+", " "),
]
_AFTER_REPAIR = [
    (r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),  # codes: jc6640
    (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),  # jc6640vc
    (r"\b\d+[a-zA-Z]+\d+\b", ""),  # 6640vc231
    (r"(worldwide\s+)?(free\s+)?shipping", ""),
    (r"(free\s)?download(\sfree)?", ""),
    (r"\bclick\b\s(?:for|on)\s\w+", ""),
    (rf"\b(?:{_EXT})(\simage[s]?)?", ""),
    (r"\bpage\s+\d+\b", ""),
    (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", " "),  # j2d1a2a…
    (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),  # sizes: 1920x1080 (Latin x, Cyrillic х, ×)
    (r"\b\s+\:\s+", ": "),
    (r"(\D[,\./])\b", r"\1 "),
    (r"\s+", " "),
    (r"^[\"\']([\w\W]+)[\"\']$", r"\1"),  # quotes around the whole caption
    (r"^[\'\_,\-\:;]", ""),
    (r"[\'\_,\-\:\-\+]$", ""),
    (r"^\.\S+$", ""),
]
_JOINERS = re.compile(r"(?:\-|\_)")


def _compiled(steps):
    return [(re.compile(p), r) for p, r in steps]


_STEPS = [_compiled(s) for s in (_BEFORE_HTML, _BEFORE_REPAIR, _AFTER_REPAIR)]


def _optional():
    try:
        import ftfy
        from bs4 import BeautifulSoup
    except ImportError as e:
        raise SanaError(f"clean_caption needs the optional package '{e.name}', which is not installed: run `pip "
                        "install beautifulsoup4 ftfy` in ComfyUI's Python (or turn clean_caption off)") from e
    return BeautifulSoup, ftfy


def _apply(steps, text: str) -> str:
    for pattern, replacement in steps:
        text = pattern.sub(replacement, text)
    return text


def _clean_once(text: str, soup, ftfy) -> str:
    before_html, before_repair, after_repair = _STEPS
    text = urllib.parse.unquote_plus(str(text)).strip().lower()
    text = _apply(before_html, text)
    text = soup(text, features="html.parser").text
    text = _apply(before_repair, text)
    if len(_JOINERS.findall(text)) > 3:  # this-is-my-cute-cat
        text = _JOINERS.sub(" ", text)
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _apply(after_repair, text).strip()


def clean(text: str) -> str:
    """``text`` cleaned as the training captions were (lowercased too); two passes."""
    soup, ftfy = _optional()
    return _clean_once(_clean_once(text, soup, ftfy), soup, ftfy)
