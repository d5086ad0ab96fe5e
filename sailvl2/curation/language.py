"""An offline language guesser: Unicode-script counts, then a stopword profile for Latin-script text.

Scope (honest): this is a heuristic filter for curation, not a general language identifier, and it needs no
model download. It works in two steps:

1. Count letters by script. CJK characters are weighted x3 (one carries about as much text as three Latin
   letters), so a Chinese caption with a few English words is still Chinese. A non-Latin dominant script
   names the language directly: Han -> ``zh`` (Han with kana -> ``ja``), Hangul -> ``ko``, Cyrillic -> ``ru``,
   Arabic -> ``ar``, Devanagari -> ``hi``, Thai -> ``th``, Greek -> ``el``, Hebrew -> ``he``. Languages that
   share a script are NOT told apart there: Ukrainian or Bulgarian come out as ``ru``, Persian or Urdu as
   ``ar``, Cantonese or Japanese kanji-only text as ``zh``.
2. Latin-script text is scored against short stopword lists of ``en fr de es it pt nl id vi``; the language
   with most stopword hits wins (ties go to the earlier language in that order). Other Latin-script languages
   (Turkish, Polish, ...) are reported as the closest of those or ``und``; text with no stopword at all
   (a list of nouns, code, numbers) is ``und`` (undetermined).

``confidence`` is a heuristic in [0, 1], not a calibrated probability: the dominant script's share of the
weighted letters, times (for Latin text) the winning language's share of stopword hits and a factor that
is below 1 when fewer than three stopwords were seen.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

__all__ = ["SUPPORTED_LANGUAGES", "UNDETERMINED", "LanguageGuess", "detect_language"]

UNDETERMINED = "und"
_CJK_WEIGHT = 3.0

# (first, last, script) code-point ranges of the scripts told apart; everything else alphabetic is "other".
_RANGES = (
    (0x0041, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"), (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"), (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"), (0x1100, 0x11FF, "hangul"), (0x3040, 0x309F, "kana"), (0x30A0, 0x30FF, "kana"),
    (0x31F0, 0x31FF, "kana"), (0x3130, 0x318F, "hangul"), (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"), (0xF900, 0xFAFF, "han"), (0x20000, 0x2FA1F, "han"),
)
_CJK_SCRIPTS = frozenset({"han", "kana", "hangul"})
_SCRIPT_LANGUAGE = {"hangul": "ko", "cyrillic": "ru", "arabic": "ar", "devanagari": "hi", "thai": "th",
                    "greek": "el", "hebrew": "he"}

_STOPWORDS: dict[str, frozenset[str]] = {name: frozenset(words.split()) for name, words in {
    "en": "the and of to is are with this that it there was were be by at as from has have its which what "
          "an or not but they their these those been will would can on for",
    "fr": "le la les des du est et une un dans sur avec pour que qui au aux ce cette sont pas par il elle "
          "nous vous ils mais ou leur",
    "de": "der die das und ist ein eine einen mit auf den dem des nicht sich zu im von für sind auch es "
          "wird werden wie oder",
    "es": "el la los las de del y es un una en con por para que se su al lo como está son muy pero sus",
    "it": "il lo la gli le di del della e è un una con per che non sono nel nella alla da si come anche",
    "pt": "o a os as de do da dos das e é um uma com por para que não em no na se são está mais",
    "nl": "de het een en van is op met voor niet dat die zijn er ook te aan om bij door naar wordt maar",
    "id": "yang dan di ini itu dengan untuk dari ada tidak dalam akan pada juga adalah sebuah seorang ke "
          "bisa atau",
    "vi": "của và là các có một những được trong cho không người này với đã để khi cũng như tôi",
}.items()}
SUPPORTED_LANGUAGES = ("zh", "ja", *_STOPWORDS, *_SCRIPT_LANGUAGE.values())
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class LanguageGuess:
    """``language``: an ISO 639-1 code from ``SUPPORTED_LANGUAGES`` or ``"und"``; ``script``: the dominant
    script (``"latin"``, ``"han"``, ``"none"`` when the text has no letters, ...)."""

    language: str
    confidence: float
    script: str


def _script_of(char: str) -> str:
    code = ord(char)
    for first, last, script in _RANGES:
        if first <= code <= last:
            return script
    return "other"


def _script_weights(text: str) -> Counter[str]:
    weights: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        script = _script_of(char)
        if script == "latin" and unicodedata.category(char) not in ("Lu", "Ll"):
            continue  # the Latin blocks also hold a few symbols (e.g. the multiplication sign)
        weights[script] += _CJK_WEIGHT if script in _CJK_SCRIPTS else 1.0
    return weights


def detect_language(text: str) -> LanguageGuess:
    """Guess the language of ``text`` (see the module docstring for what can and cannot be told apart)."""
    weights = _script_weights(unicodedata.normalize("NFC", text))
    total = sum(weights.values())
    if not total:
        return LanguageGuess(UNDETERMINED, 0.0, "none")
    cjk = sum(weights[s] for s in _CJK_SCRIPTS)
    script, top = max(weights.items(), key=lambda kv: kv[1])
    if cjk > top:  # Han + kana together outweigh any single other script: it is CJK text
        script, top = max(((s, weights[s]) for s in _CJK_SCRIPTS), key=lambda kv: kv[1])
        top = cjk
    share = top / total
    if script in _CJK_SCRIPTS:
        # Japanese mixes kana into Han text; Chinese has none. Hangul alone is Korean.
        if weights["hangul"] >= weights["han"] + weights["kana"]:
            return LanguageGuess("ko", round(share, 4), "hangul")
        return LanguageGuess("ja" if weights["kana"] > 0.1 * cjk else "zh", round(share, 4), script)
    if script in _SCRIPT_LANGUAGE:
        return LanguageGuess(_SCRIPT_LANGUAGE[script], round(share, 4), script)
    if script != "latin":
        return LanguageGuess(UNDETERMINED, 0.0, script)
    words = _WORD.findall(unicodedata.normalize("NFC", text).casefold())
    hits = {name: sum(word in stops for word in words) for name, stops in _STOPWORDS.items()}
    best = max(hits, key=lambda name: hits[name])  # max keeps the first of equal counts
    if not hits[best]:
        return LanguageGuess(UNDETERMINED, 0.0, "latin")
    confidence = share * hits[best] / sum(hits.values()) * min(1.0, hits[best] / 3.0)
    return LanguageGuess(best, round(confidence, 4), "latin")
