"""Verification of a semantic-cache candidate: may the answer cached for one question be
served for another that the embedder finds close? Pure.

Embedding similarity alone serves wrong answers: with all-MiniLM-L6-v2, "Is Paris the
capital of France?" and "Is Paris not the capital of France?" score 0.95. The near-misses
that fool a threshold change little text and much meaning, and each kind leaves a mark that
plain rules can read:

- polarity: a negation on one side only (the parity of negations differs);
- numbers: a different set of numbers (digits, number words, ordinals);
- quantities and units: a different set of units (grams vs ounces, per day vs per hour);
- named entities: a different set of capitalised names, or the same names in another
  order where order carries meaning (comparisons, "from ... to"; units too when both
  questions have such an order: "convert miles to km"), or the same terms with two of them
  swapped ("Do cats eat mice?" / "Do mice eat cats?"), or the two sides of a comparison
  exchanged in the same direction however it is worded ("Is gold denser than lead?" / "Is
  lead heavier than gold?"), or a question that is the other one with a single content
  word swapped, added or dropped ("cats" for "dogs");
- comparison direction: a different set of directed words (bigger/smaller, before/after,
  first/last, minimum/maximum; "less expensive" reads as "cheaper");
- qualifier: a noun both questions name, narrowed by a word on one side only while the
  other has every content word accounted for ("a potato" / "a sweet potato"), or narrowed
  by different words on the two sides ("my home insurance" / "my car insurance"). When
  both questions are reworded, such a word is often the one change that matters, and the
  rules that compare whole sentences no longer see it;
- language: another language (an answer in English does not serve a question in French);
- action: the same content words but one replaced by another that is no form of it,
  however the small words around it changed ("What year did the Berlin Wall fall?" and
  "... was built?", "How do I install X?" and "How do I update X?"): a changed verb or
  action asks something else about the same things. Words that only restate the question
  ("in what year" for "when", "am I allowed to" for "can I") are set aside first, so that
  they cannot hide a changed verb;
- the kind of answer asked: a time ("when", "what year"), a place, a person, a reason, an
  extent ("how long", "how many hours"), an amount, money ("how much ... cost"), an age, a
  manner ("how do I") or a yes or no. "How long does it take to ship X?" and "How much does
  it cost to ship X?" share every content word but one and ask different things;
- modality: "can I" (is it possible, allowed) against "should I" (is it advised), except
  in questions asking how to do something.

Some wordings are read as the same thing: a question word and "which"/"what" with a noun
naming its kind of answer ("Who" / "Which artist", "When" / "In what year", "How do I" /
"What steps", "Who invented" / "Which inventor created"), "how long" and "how many hours"
or "what ... period" (the units rule compares the hours), an order and "what" ("Name the
longest river" / "What is the longest river"), a phrase moved to the other end of the
question ("Is it safe to drink X in Y?" / "Is X in Y safe to drink?"), an adverb and its
adjective ("safely" / "safe"), a verb of measure with more or less and the comparative
("costs more" / "more expensive"), the converse comparison with its sides swapped ("Is A
bigger than B?" / "Is B smaller than A?"), a name and its plural ("Saturday" /
"Saturdays"), a name with or without its kind of place ("Mount Everest" / "Everest") and its
usual short form ("the United States" / "the US"), "one" and "a" ("in one cup" / "in a
cup"), a number or a unit in any spelling ("three" / "3", "15-minute" / "15 minute", "km" /
"kilometers"), a compound in one word or two ("lawnmower" / "lawn mower"), common synonyms
and phrasal verbs ("buy" / "purchase", "turn on" / "enable"), and inflections of one word
(a shared stem, not just a shared start: "telephone" and "television" are different words;
irregular forms by list: "kept" / "keep"; a noun of action: "replacement" / "replace").

Every rule errs on the side of a miss: a miss costs one generation, a false hit a wrong
answer. The rules are written for English questions; a question in another language is
only ever served an answer cached for the same language, under the same rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from cache.semantic_words import (
    AMBIGUOUS_UNITS,
    APOSTROPHE,
    AUXILIARIES,
    COMPARATORS,
    DETERMINERS,
    DIRECTIONS,
    DISTINCT,
    DURATION_NOUNS,
    EXTENT_UNITS,
    FUNCTION_WORDS,
    GENERIC_NAMES,
    LENGTH_UNITS,
    LOOSE_WORDS,
    MAKING_VERBS,
    MANNER_NOUNS,
    MEASURE_VERBS,
    MODALS,
    MODIFIERS,
    MONEY_WORDS,
    NEGATIONS,
    NOUN_SUFFIXES,
    NUMBER_WORDS,
    ORDERING,
    PHRASE_OPENERS,
    PHRASES,
    POSITIONS,
    PREPOSITIONS,
    REQUESTS,
    STOPWORDS,
    SUFFIXES,
    SYNONYMS,
    TIME_UNITS,
    TOKEN,
    UNDIRECTED_ADVERBS,
    UNITS,
    WEAK_AXES,
    WH_WORDS,
    WORD_CHARS,
)


class Rejection(StrEnum):
    """Why a candidate was not served; the statistics count rejections by these names."""

    THRESHOLD = "threshold"  # similarity under the entry's threshold
    NEGATION = "negation"
    NUMBERS = "numbers"
    UNITS = "units"
    ENTITIES = "entities"
    COMPARISON = "comparison"
    LANGUAGE = "language"
    ACTION = "action"  # one content word (most often the verb) replaced by another
    ASKS = "asks"  # asks for another kind of answer (a time, a place, a price, a duration)
    MODALITY = "modality"  # what may be done against what should be ("can I" / "should I")
    JUDGE = "judge"  # the small-model judge did not confirm it (cache.semantic_judge)


@dataclass(frozen=True)
class QuestionFacts:
    """What the rules compare, read once per question."""

    tokens: tuple[str, ...]  # lower-cased words and symbols, in order
    language: str
    negations: int
    numbers: frozenset[str]
    units: frozenset[str]
    entities: tuple[str, ...]  # capitalised names in order, lower-cased
    terms: tuple[str, ...]  # content words, numbers and units in order (see _swapped)
    directions: frozenset[tuple[str, int]]
    ordered: bool  # whether the order of names carries meaning
    asks: str | None = None  # the kind of answer asked for, when the wording says (_asks)
    asked_unit: str | None = None  # the unit the answer is asked in ("what year", "how many g")
    modality: frozenset[str] = frozenset()  # the kinds of modal verb used (MODALS)
    named: tuple[str, ...] = ()  # names and units in order ("convert pounds to kilograms")


def _split_contractions(word: str) -> list[str]:
    word = word.replace(APOSTROPHE, "'")
    if word.endswith("n't"):
        stem = word[:-3]
        return [{"ca": "can", "wo": "will", "sha": "shall"}.get(stem, stem), "not"]
    if word.endswith("'s") or word.endswith("s'"):
        return [word[:-2] if word.endswith("'s") else word[:-1]]
    return [word]


def _numbered_parts(word: str) -> list[str]:
    """A hyphenated word split where one part is a number: "15-minute" is "15 minute",
    "carbon-14" is "carbon 14"; other compounds stay whole ("half-life", "cat-friendly")."""
    parts = word.split("-")
    if len(parts) > 1 and all(parts) and any(
            any(ch.isdigit() for ch in part) or NUMBER_WORDS.get(part.lower(), "").isdigit()
            for part in parts):
        return parts
    return [word]


def _tokens(text: str) -> list[tuple[str, str]]:
    """(as written, lower-cased) pairs; contractions and numbered compounds split,
    trailing dots dropped, phrases read as the word they mean (PHRASES) and an order at
    the start read as "what" (REQUESTS)."""
    out: list[tuple[str, str]] = []
    for match in TOKEN.finditer(unicodedata.normalize("NFC", text)):
        raw = match.group().strip(".'-" + APOSTROPHE)
        if not raw:
            continue
        for part in _split_contractions(raw):
            for piece in _numbered_parts(part) if part else []:
                out.append((piece, piece.lower()))
    if out and out[0][1] in REQUESTS:
        out[0] = ("What", "what")
    return _read_phrases(out)


def _phrases_by_first_word() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for words, written in PHRASES:
        by_first.setdefault(words[0], []).append((words, written))
    return by_first


_PHRASES_BY_FIRST_WORD = _phrases_by_first_word()


def _read_phrases(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each phrase of PHRASES replaced by the word it means."""
    out: list[tuple[str, str]] = []
    index = 0
    while index < len(pairs):
        for words, written in _PHRASES_BY_FIRST_WORD.get(pairs[index][1], ()):
            if tuple(low for _, low in pairs[index:index + len(words)]) == words:
                out.append((written, written.lower()))
                index += len(words)
                break
        else:
            out.append(pairs[index])
            index += 1
    return out


def detect_language(words: list[str]) -> str:
    """The language whose common words the question uses most; "und" when none."""
    for word in words:
        if word.isascii():  # no letter of the scripts below is ASCII
            continue
        for char in word:
            name = unicodedata.name(char, "")
            for script in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "CYRILLIC", "ARABIC",
                           "GREEK", "HEBREW", "DEVANAGARI", "THAI"):
                if name.startswith(script):
                    return script.lower()
    # Only words of one language count: "a", "in" or "la" are common in several.
    scores = {lang: sum(1 for w in words if w in DISTINCT[lang]) for lang in STOPWORDS}
    if max(scores.values()) == 0:
        # No word of one language only ("Where do I ...": "do" is Portuguese too): count
        # every common word instead.
        scores = {lang: sum(1 for w in words if w in STOPWORDS[lang]) for lang in STOPWORDS}
    best = max(scores.values())
    if best == 0:
        return "und"
    # Ties go to English: short English questions share words like "a" or "la" with others.
    if scores["en"] == best:
        return "en"
    return max(scores, key=lambda lang: scores[lang])


def _number(lower: str) -> str | None:
    if lower in NUMBER_WORDS:
        return NUMBER_WORDS[lower]
    if any(ch.isdigit() for ch in lower):
        digits = lower.replace(",", "")
        stripped = re.sub(r"(st|nd|rd|th)$", "", digits)
        if stripped.replace(".", "", 1).isdigit():
            return ("#" + stripped) if stripped != digits else stripped
        return digits  # a code like "4k" or "iphone15": kept whole
    return None


def _direction(word: str | None) -> tuple[str, int] | None:
    """The direction a word names, an adverb taking its adjective's ("safely", "easily")."""
    if word is None or word in UNDIRECTED_ADVERBS:
        return None
    if word in DIRECTIONS:
        return DIRECTIONS[word]
    if word.endswith("ily"):
        return DIRECTIONS.get(word[:-3] + "y")
    if word.endswith("ly"):
        return DIRECTIONS.get(word[:-2])
    return None


def _directions(pairs: list[tuple[str, str]]) -> frozenset[tuple[str, int]]:
    """The directions a question names. A directed word right after "how" asks for a
    magnitude and names none ("how fast", "how large", "how old"); "to" before a verb
    ("to take") is no way either. An axis named both ways in one question ("from A to B",
    "growing or shrinking") is named both ways: (axis, 2)."""
    lowers = [low for _, low in pairs]
    found: set[tuple[str, int]] = set()
    skip = False
    for index, word in enumerate(lowers):
        if skip:
            skip = False
            continue
        nxt = lowers[index + 1] if index + 1 < len(lowers) else None
        if word in ("to", "towards", "into") and not (
                nxt in DETERMINERS or (nxt is not None and (
                    pairs[index + 1][0][:1].isupper() or nxt[:1].isdigit()))):
            continue
        ahead = _direction(nxt)
        if word in MODIFIERS and ahead is not None and ahead[0] != "amount":
            axis, sign = ahead
            found.add((axis, sign * MODIFIERS[word]))
            skip = True
            continue
        if index > 0 and lowers[index - 1] == "how":
            continue
        if word in POSITIONS:
            position = _position(lowers, index)
            if position is not None:
                found.add(position)
            continue
        if word == "last" and _is_verb_last(lowers, index):
            continue
        if word in MEASURE_VERBS and nxt in MODIFIERS:
            found.add((MEASURE_VERBS[word], MODIFIERS[nxt]))
            skip = True
            continue
        direction = _direction(word)
        if direction is not None:
            found.add(direction)
    both_ways = {axis for axis, sign in found if sign and (axis, -sign) in found}
    signed = {axis for axis, sign in found if sign}
    kept = {(axis, sign) for axis, sign in found
            if axis not in both_ways and (sign or axis not in signed)}
    return frozenset(kept | {(axis, 2) for axis in both_ways})


def _is_number_word(word: str) -> bool:
    return _number(word) is not None


def _position(lowers: list[str], index: int) -> tuple[str, int] | None:
    """"over"/"under" before a number or a unit compare amounts ("trucks over 7.5 tonnes",
    "over an hour late"); between two numbers they make a ratio ("120 over 80") and name
    nothing; elsewhere a place or a state ("under warranty"), a weak axis."""
    sign = POSITIONS[lowers[index]]
    ahead = lowers[index + 1:index + 5]
    if not any(_is_number_word(w) or (w in UNITS and w not in AMBIGUOUS_UNITS)
               for w in ahead):
        return ("place", sign)
    if index > 0 and _is_number_word(lowers[index - 1]) and ahead and _is_number_word(ahead[0]):
        return None
    return ("amount", sign)


def _is_verb_last(lowers: list[str], index: int) -> bool:
    """"last" as a verb ("How long does milk last in the fridge?"): after no determiner,
    and ending the question or before a preposition."""
    before = lowers[index - 1] if index > 0 else ""
    after = lowers[index + 1] if index + 1 < len(lowers) else ""
    return before not in DETERMINERS and before != "at" and (
        after == "" or after in PREPOSITIONS or after in ("longer", "outside", "after"))


def _is_name(raw: str, low: str, *, first: bool) -> bool:
    """Capitalised past the first word, an acronym, or camel-cased ("iPhone")."""
    if raw[:1].isupper() and not first and low not in FUNCTION_WORDS:
        return True
    if raw.isupper() and len(raw) > 1:
        # "OK" and "AM" are no names; "IT" most often is.
        return low not in FUNCTION_WORDS or low == "it"
    return raw[:1].islower() and any(c.isupper() for c in raw[1:])


# Words before "second" that make it the unit: "per second", "a second".
_PER = frozenset({"per", "a", "an", "each", "every"})


def read_question(text: str) -> QuestionFacts:
    """The facts the rules compare, from a question as written."""
    pairs = _tokens(text)
    lowers = [low for _, low in pairs]
    asks, asked_unit = _asks(lowers)
    numbers: set[str] = set()
    units: set[str] = set()
    entities: list[str] = []
    named: list[str] = []
    after_number = False
    for index, (raw, low) in enumerate(pairs):
        number = _number(low)
        # "second" is the unit after a number or "per" ("30 second", "per second"), else
        # the ordinal ("the second tallest").
        if low == "second" and (after_number or (index > 0 and lowers[index - 1] in _PER)):
            number = None
        if number is not None:
            numbers.add(number)
            if any(ch.isalpha() for ch in number) and any(ch.isdigit() for ch in number):
                entities.append(number)  # a code names a thing ("K2", "iPhone15")
                named.append(number)
            after_number = True
            continue
        unit = UNITS.get(low)
        if unit is not None and (low not in AMBIGUOUS_UNITS or after_number or low == "second"):
            units.add(unit)
            if not (index > 0 and lowers[index - 1] == "in"):  # "in km" may stand anywhere
                named.append(unit)
        elif _is_name(raw, low, first=index == 0):
            # A plural names the same thing: "on Saturday" / "on Saturdays".
            entities.append(low[:-1] if len(low) > 3 and low.endswith("s")
                            and not low.endswith("ss") else low)
            named.append(entities[-1])
        after_number = False
    return QuestionFacts(
        tokens=tuple(lowers),
        language=detect_language(lowers),
        negations=sum(1 for w in lowers if w in NEGATIONS),
        numbers=frozenset(numbers),
        units=frozenset(units),
        entities=tuple(entities),
        terms=tuple(_term(w) for w in _content(lowers)),
        directions=_directions(pairs),
        ordered=any(w in ORDERING for w in lowers),
        asks=asks,
        asked_unit=asked_unit,
        modality=frozenset(MODALS[w] for w in lowers if w in MODALS),
        named=tuple(named),
    )



def _asks(lowers: list[str]) -> tuple[str | None, str | None]:
    """The kind of answer a question asks for, read from its question word, and the unit
    it asks the answer in: "when" and "what year" ask for a time, "how long" and "how many
    minutes" for an extent, "how much ... cost" for money, "who" for a person, "how do I"
    for a manner, "is ..." for a yes or no. No kind when the wording does not say ("what
    is", "which", "how fast")."""
    if lowers and lowers[0] in AUXILIARIES:
        return "yes/no", None
    for index, word in enumerate(lowers):
        nxt = lowers[index + 1] if index + 1 < len(lowers) else ""
        if word in ("who", "whom", "whose"):
            return "person", None
        if word in ("where", "when", "why"):
            return {"where": "place", "when": "time", "why": "reason"}[word], None
        if word in ("what", "which"):
            if nxt in ("year", "time", "date"):
                return "time", UNITS.get(nxt)
            return None, None
        if word == "how":
            return _asks_how(lowers, index)
    return None, None


def _asks_how(lowers: list[str], index: int) -> tuple[str | None, str | None]:
    """`_asks` for a question word "how" at `index`."""
    nxt = lowers[index + 1] if index + 1 < len(lowers) else ""
    if nxt in ("long", "far", "old"):
        return ("age" if nxt == "old" else "extent"), None
    if nxt == "come":
        return "reason", None
    if nxt in ("many", "much"):
        after = lowers[index + 2] if index + 2 < len(lowers) else ""
        unit = UNITS.get(after)
        if after == "time" or unit in EXTENT_UNITS:
            return "extent", unit
        if any(w in MONEY_WORDS for w in lowers):
            return "money", unit
        # "How much is a day pass?" asks its price, unless a unit other than one of time
        # says what is measured ("How much is a cup in ml?").
        if nxt == "much" and after in ("is", "are", "was", "were") and not any(
                w in UNITS and w not in AMBIGUOUS_UNITS and UNITS[w] not in TIME_UNITS
                for w in lowers):
            return "money", None
        return "amount", unit
    if nxt in AUXILIARIES or nxt == "to":
        return "manner", None
    return None, None  # "how fast", "how big": a magnitude of no fixed kind


# Kinds of answer that one wording may ask for as another: "how many hours of sleep" and
# "how much sleep".
_SAME_KIND = frozenset({frozenset({"extent", "amount"})})


def _kinds_differ(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a != b and frozenset({a, b}) not in _SAME_KIND


def _modality_differs(a: QuestionFacts, b: QuestionFacts) -> bool:
    """Modal verbs on both sides of different kinds only ("How many can I ...?" against
    "How many should I ...?"), unless both ask how to do something, where "how can I" and
    "how should I" ask the same."""
    if not a.modality or not b.modality or a.modality & b.modality:
        return False
    return not (a.asks == "manner" and b.asks == "manner")


def _units_differ(a: QuestionFacts, b: QuestionFacts) -> bool:
    """Different units, except the unit one question asks its answer in when the other
    asks for the same kind of answer in none: "In what year ...?" and "When ...?", "How
    many minutes ...?" and "How long ...?"."""
    if a.units == b.units:
        return False
    for one, other in ((a, b), (b, a)):
        if (one.units ^ other.units == {one.asked_unit} and other.asked_unit is None
                and one.asks in ("time", "extent") and one.asks == other.asks):
            return False
    return True


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in FUNCTION_WORDS and WORD_CHARS.search(w)]


def _canonical(words: tuple[str, ...]) -> tuple[str, ...]:
    """Words with every content word as the rules compare it (`_term`), and "an" as "a"."""
    return tuple(("a" if w == "an" else w) if w in FUNCTION_WORDS else _term(w) for w in words)


def _term(word: str) -> str:
    """A content word as the rules compare it: a number or a unit in its one spelling
    ("three" is "3", "kilometers" is "km")."""
    number = _number(word)
    if number is not None:
        return number
    if word in UNITS and word not in AMBIGUOUS_UNITS:
        return UNITS[word]
    return word


@functools.lru_cache(maxsize=8192)  # words recur across questions; stemming is pure
def _stem(word: str) -> str:
    """A word without one inflectional ending ("shipped" -> "ship", "studies" -> "study")
    or the ending of a noun of action ("replacement" -> "replace")."""
    for suffix in NOUN_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # a doubled consonant: "shipp" -> "ship"
    return word


def _synonym_groups() -> dict[str, frozenset[int]]:
    """For each word in SYNONYMS, the groups (by position) that hold it."""
    groups: dict[str, frozenset[int]] = {}
    for position, group in enumerate(SYNONYMS):
        for word in group:
            groups[word] = groups.get(word, frozenset()) | {position}
    return groups


_SYNONYM_GROUPS = _synonym_groups()


def _synonyms(a: str, b: str) -> bool:
    """Whether one group of SYNONYMS holds both words, or inflections of them ("fixing" /
    "repair")."""
    groups_a = _SYNONYM_GROUPS.get(a, frozenset()) | _SYNONYM_GROUPS.get(_stem(a), frozenset())
    groups_b = _SYNONYM_GROUPS.get(b, frozenset()) | _SYNONYM_GROUPS.get(_stem(b), frozenset())
    return bool(groups_a & groups_b)


def _answers_how(adjective: str, unit: str) -> bool:
    """Whether "how many <unit>" (or "what ... period") asks what "how <adjective>" does:
    "long" a time, a length or a period, "far" a length."""
    canonical = UNITS.get(unit, unit)  # a spelling ("hours") or a unit already read ("h")
    if adjective == "long":
        return unit == "time" or canonical in EXTENT_UNITS or unit in DURATION_NOUNS
    return adjective == "far" and canonical in LENGTH_UNITS


def _shared_start(x: str, y: str) -> int:
    """How many letters two words share from their start."""
    shared = 0
    while shared < min(len(x), len(y)) and x[shared] == y[shared]:
        shared += 1
    return shared


def _same_word(a: str, b: str) -> bool:
    """A spelling variant or inflection, a synonym, or words naming the same direction.

    Two words are forms of one when their stems are equal, or share at least four letters
    and differ after them by at most three ("built"/"build", "discoverer"/"discovered",
    "construct"/"construction"); a shared start alone is not enough ("telephone" and
    "television" share "tele" and name different things)."""
    for x in {a, _stem(a)}:
        for y in {b, _stem(b)}:
            shared = _shared_start(x, y)
            if x == y or (shared >= 4 and len(x) - shared <= 3 and len(y) - shared <= 3):
                return True
    if _synonyms(a, b):
        return True
    # "long" and a unit of time or length, "far" and one of length: "how long" / "how many
    # hours".
    if _answers_how(a, b) or _answers_how(b, a):
        return True
    # Words naming the same direction; a verb of measure and a direction on its axis ("cost"
    # and "expensive").
    da, db = DIRECTIONS.get(a), DIRECTIONS.get(b)
    if da is not None and db is not None:
        return da == db
    axis_a = da[0] if da is not None else MEASURE_VERBS.get(a)
    axis_b = db[0] if db is not None else MEASURE_VERBS.get(b)
    return axis_a is not None and axis_a == axis_b


def _single_swap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether one question is the other with one short run of content words replaced,
    added or dropped, everything else equal: the mark of a swapped term ("cats" for "dogs",
    "a half marathon"), which a paraphrase almost never leaves."""
    a, b = _canonical(a), _canonical(b)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    if len(ops) != 1:
        return False
    _, i1, i2, j1, j2 = ops[0]
    if _names_the_answer(a[i1:i2], b[j1:j2]) or _names_the_answer(b[j1:j2], a[i1:i2]):
        return False
    # A kind of place dropped from a name is no swapped term ("Mount Everest").
    left = [w for w in _content(list(a[i1:i2])) if w not in GENERIC_NAMES]
    right = [w for w in _content(list(b[j1:j2])) if w not in GENERIC_NAMES]
    if (not left and not right) or max(i2 - i1, j2 - j1) > 3:
        return False
    # One word for one of the same meaning ("Saturday"/"Saturdays", "bigger"/"larger").
    if len(left) == 1 and len(right) == 1 and _same_word(left[0], right[0]):
        return False
    # Directed words for directed words naming the same ("pricier"/"more expensive").
    return not (all(w in DIRECTIONS or w in MODIFIERS for w in left + right)
                and _directions([(w, w) for w in left])
                == _directions([(w, w) for w in right]) != frozenset())


def _names_the_answer(wh: tuple[str, ...], which: tuple[str, ...]) -> bool:
    """A question word against "which" or "what" and one noun naming the kind of answer:
    "Who" / "Which artist", "When" / "In what year", "What time" / "When"; "how long" or
    "how far" against "how many" and a unit ("how many hours"); "how do I" against "what
    steps". The noun says what the question word already asks (the units rule compares
    the unit)."""
    if wh in (("long",), ("far",)):
        return (len(which) == 2 and which[0] in ("many", "much")
                and _answers_how(wh[0], which[1]))
    if (wh[:1] == ("how",) and not _content(list(wh)) and which[:1] in (("what",), ("which",))
            and len(_content(list(which))) == 1 and _content(list(which))[0] in MANNER_NOUNS):
        return True
    if len(wh) != 1 or wh[0] not in WH_WORDS:
        return _names_the_doer(wh, which)
    rest = which[1:] if which[:1] and which[0] in PREPOSITIONS else which
    if len(rest) != 2 or rest[0] not in ("which", "what") or not _content([rest[1]]):
        return False
    # "When" asks for a year, a time or a date; "what day" or "what month" is narrower.
    return wh[0] != "when" or rest[1] in ("year", "time", "date")


def _names_the_doer(wh: tuple[str, ...], which: tuple[str, ...]) -> bool:
    """"Who invented" / "Which inventor created": the noun is the verb's doer and the new
    verb only says that it made the thing ("Which inventor improved" asks something else)."""
    return (len(wh) == 2 and wh[0] == "who" and len(which) == 3
            and which[0] in ("which", "what") and _same_word(wh[1], which[1])
            and (which[2] in MAKING_VERBS or _same_word(wh[1], which[2])))


def disagreement(cached: QuestionFacts, asked: QuestionFacts) -> Rejection | None:
    """The first rule the pair breaks, or None when the cached answer may be served."""
    if cached.language != asked.language:
        return Rejection.LANGUAGE
    if cached.negations % 2 != asked.negations % 2:
        return Rejection.NEGATION
    cached, asked = _one_as_article(cached, asked)
    cached, asked = _as_can(cached, asked)
    cached, asked = _time_word_aside(cached, asked), _time_word_aside(asked, cached)
    cached, asked = _joined_compounds(cached, asked), _joined_compounds(asked, cached)
    if cached.numbers != asked.numbers:
        return Rejection.NUMBERS
    if _units_differ(cached, asked):
        return Rejection.UNITS
    # "Is A bigger than B?" / "Is B smaller than A?": the order of the terms and the
    # directions both turned around ask the same thing.
    converse = _converse(cached, asked)
    if not converse and _directions_differ(cached.directions, asked.directions):
        return Rejection.COMPARISON
    if _kinds_differ(cached.asks, asked.asks):
        return Rejection.ASKS
    if _modality_differs(cached, asked):
        return Rejection.MODALITY
    if _names(cached.entities) != _names(asked.entities):
        return Rejection.ENTITIES
    return None if converse else _wording_disagreement(cached, asked)


def _wording_disagreement(cached: QuestionFacts, asked: QuestionFacts) -> Rejection | None:
    """The rules on the order and the choice of words, for two questions naming the same
    things: names in another order, swapped terms, one term or one verb replaced."""
    if (cached.ordered or asked.ordered) and _order(cached.entities) != _order(asked.entities):
        return Rejection.ENTITIES
    # Both in an order ("convert A to B"): the units both name are in it too.
    if cached.ordered and asked.ordered:
        both = set(cached.named) & set(asked.named)
        if ([n for n in _order(cached.named) if n in both]
                != [n for n in _order(asked.named) if n in both]):
            return Rejection.ENTITIES
    if _sides_exchanged(cached, asked):
        return Rejection.ENTITIES
    if _swapped(cached, asked):
        return Rejection.ENTITIES
    if _single_swap(cached.tokens, asked.tokens):
        return Rejection.ENTITIES
    if _replaced_term(cached.terms, asked.terms,
                      manner="manner" in (cached.asks, asked.asks)):
        return Rejection.ACTION
    if _qualified_otherwise(cached, asked):
        return Rejection.ENTITIES
    return None


def _unaccounted(facts: QuestionFacts, other: QuestionFacts) -> set[str]:
    """The content words of one question that the other has in no form and no synonym."""
    theirs = set(other.terms)
    return {w for w in facts.terms
            if w not in theirs and not any(_same_word(w, o) for o in theirs)}


def _qualifiers(facts: QuestionFacts, unaccounted: set[str]) -> dict[str, str]:
    """Each term that a word of this question alone qualifies, with that word: "a sweet
    potato", "the kitchen sink", "my health insurance". The qualifier opens a noun phrase
    (after a determiner, a preposition or a quantifier) and is a plain word: no number, no
    name, no directed word (the comparison rule reads those), no "-ing" form ("drinking
    coffee" is an action, not a kind of coffee), and no word that rewording brings and takes
    away (LOOSE_WORDS)."""
    words = _canonical(facts.tokens)
    names = set(facts.entities) | set(facts.named)

    def named(word: str) -> bool:
        return word in names or (word.endswith("s") and word[:-1] in names)

    found: dict[str, str] = {}
    for before, word, head in zip(words, words[1:], words[2:], strict=False):
        if (before in PHRASE_OPENERS and word in unaccounted and head in facts.terms
                and head not in unaccounted and not named(word) and not named(head)
                and _number(word) is None and _number(head) is None
                and not _is_directed(word) and not _is_directed(head)
                and word not in GENERIC_NAMES and word not in LOOSE_WORDS
                and not word.endswith("ing")):
            found[head] = word
    return found


def _qualified_otherwise(a: QuestionFacts, b: QuestionFacts) -> bool:
    """Whether a term both questions name is narrowed by a word on one side only while the
    other side has every content word accounted for ("a potato" / "a sweet potato"), or
    narrowed by different words on the two sides ("the kitchen sink" / "the bathroom
    sink"). With both questions reworded, such a word is often the one change that
    matters, and the rules that compare whole sentences no longer see it."""
    loose_a, loose_b = _unaccounted(a, b), _unaccounted(b, a)
    qualified_a, qualified_b = _qualifiers(a, loose_a), _qualifiers(b, loose_b)
    if (qualified_a and not loose_b) or (qualified_b and not loose_a):
        return True
    return any(_same_word(x, y) for x in qualified_a for y in qualified_b)


def _names(entities: tuple[str, ...]) -> frozenset[str]:
    """The names a question uses, a kind of place leading or ending one set aside ("Mount
    Everest" / "Everest"), unless it is all the name there is."""
    names = frozenset(entities)
    return names - GENERIC_NAMES or names


def _one_as_article(a: QuestionFacts, b: QuestionFacts) -> tuple[QuestionFacts, QuestionFacts]:
    """"one" or "1" on one side where the other says "a" or "an" ("in one cup" / "in a
    cup"), read as the article, when it is the only number the two disagree on."""
    if a.numbers ^ b.numbers != {"1"}:
        return a, b
    one, other = (a, b) if "1" in a.numbers else (b, a)
    if not {"a", "an"} & set(other.tokens):
        return a, b
    read = dataclasses.replace(
        one, numbers=one.numbers - {"1"},
        tokens=tuple("a" if _number(w) == "1" else w for w in one.tokens),
        terms=tuple(w for w in one.terms if w != "1"))
    return (read, other) if one is a else (other, read)


_SAFE = frozenset({"safe", "safely"})
# "Am I allowed to ...?", "Is it possible to ...?", "Am I able to ...?" ask what "Can I
# ...?" does.
_CAN = frozenset({"allowed", "permitted", "able", "possible"})


def _as_can(a: QuestionFacts, b: QuestionFacts) -> tuple[QuestionFacts, QuestionFacts]:
    """A question without a modal verb read as the other's "Can I ...?": "allowed",
    "possible" or "able" set aside, and "safe" too ("Can dogs eat grapes?" / "Are grapes
    safe for dogs to eat?") when that is all the two disagree on in direction. The words
    set aside can no longer hide a changed verb ("Am I allowed to bring ...?" / "Can I buy
    ...?")."""
    for one, other in ((a, b), (b, a)):
        if "possible" not in other.modality or one.modality:
            continue
        aside = _CAN & set(one.tokens)
        directions = one.directions
        if (_SAFE & set(one.tokens) and one.directions == other.directions | {("good", 1)}
                and ("good", 1) not in other.directions):
            aside |= _SAFE
            directions = other.directions
        if aside:
            read = dataclasses.replace(
                one, directions=directions,
                tokens=tuple(w for w in one.tokens if w not in aside),
                terms=tuple(w for w in one.terms if w not in aside))
            return (read, other) if one is a else (other, read)
    return a, b


def _time_word_aside(facts: QuestionFacts, other: QuestionFacts) -> QuestionFacts:
    """"In what year did X sink?" read as "When did X sink?": the noun that names the time
    asked for is set aside where the other question asks for a time without it, so that it
    cannot hide a changed verb ("When did X sail?")."""
    if facts.asks != "time" or other.asks != "time":
        return facts
    for word, nxt in itertools.pairwise(facts.tokens):
        if word in ("what", "which") and nxt in ("year", "time", "date"):
            term = _term(nxt)
            if term in facts.terms and term not in other.terms:
                terms = list(facts.terms)
                terms.remove(term)
                return dataclasses.replace(facts, terms=tuple(terms))
            return facts
    return facts


def _joined_compounds(facts: QuestionFacts, other: QuestionFacts) -> QuestionFacts:
    """Two neighbouring words read as one where the other question writes them as one
    ("lawn mower" / "lawnmower", "e mail" / "email")."""
    joined_terms = set(other.terms)
    if not any(x + y in joined_terms for x, y in itertools.pairwise(facts.terms)):
        return facts

    def join(words: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        index = 0
        while index < len(words):
            if index + 1 < len(words) and words[index] + words[index + 1] in joined_terms:
                out.append(words[index] + words[index + 1])
                index += 2
            else:
                out.append(words[index])
                index += 1
        return tuple(out)

    return dataclasses.replace(facts, tokens=join(facts.tokens), terms=join(facts.terms))


def _converse(a: QuestionFacts, b: QuestionFacts) -> bool:
    """Whether one question names the converse of the other's comparison with its two
    sides swapped: "Is Jupiter bigger than Saturn?" / "Is Saturn smaller than Jupiter?",
    "Is brown rice healthier than white rice?" / "Is white rice less healthy than brown
    rice?". Every direction the two disagree on is turned around (and none is named both
    ways), and the terms other than the directed words are the same with two runs of them
    exchanged. A turned direction without the swap
    ("Is Jupiter smaller than Saturn?"), or the swap without the turn, is no converse."""
    if not (COMPARATORS & set(a.tokens) and COMPARATORS & set(b.tokens)):
        return False
    turned = a.directions - b.directions
    if not turned or any(sign not in (1, -1) for _, sign in turned) or (
            b.directions - a.directions != {(axis, -sign) for axis, sign in turned}):
        return False
    x, y = _compared(a), _compared(b)
    return sorted(x) == sorted(y) and _exchanged(x, y)


_COMPARED = "<compared with>"  # where "than", "before" or "after" stands


def _sides_exchanged(a: QuestionFacts, b: QuestionFacts) -> bool:
    """The same comparison, in the same direction, with its two sides exchanged: "Is gold
    denser than lead?" / "Is lead heavier than gold?". However the comparative is worded,
    it asks the opposite."""
    if a.directions != b.directions or not (
            COMPARATORS & set(a.tokens) and COMPARATORS & set(b.tokens)):
        return False
    x, y = _compared(a), _compared(b)
    return sorted(x) == sorted(y) and x != y and _exchanged(x, y)


def _compared(facts: QuestionFacts) -> list[str]:
    """The terms in order without the directed words, and where the comparing word stands:
    "Is Jupiter bigger than Saturn?" is jupiter, <compared with>, saturn."""
    terms = set(facts.terms)
    out: list[str] = []
    for word in _canonical(facts.tokens):
        if word in COMPARATORS:
            out.append(_COMPARED)
        elif (word in terms and _direction(word) is None and word not in MODIFIERS
              and word not in MEASURE_VERBS):
            out.append(word)
    return out


def _differing_window(x: list[str], y: list[str]) -> tuple[list[str], list[str]]:
    """The runs of x and y between their common beginning and common end (x and y of the
    same length)."""
    start = 0
    while start < len(x) and x[start] == y[start]:
        start += 1
    end = len(x)
    while end > start and x[end - 1] == y[end - 1]:
        end -= 1
    return x[start:end], y[start:end]


def _exchanged(x: list[str], y: list[str]) -> bool:
    """Whether y is x with the two sides of its comparison exchanged: x = S + P + M + Q + E
    and y = S + Q + M + P + E, P and Q different, the comparing word in M and in neither
    side. A phrase moved to the other end ("In winter, is Portugal warmer than Spain?") is
    no exchange of the sides."""
    window, other = _differing_window(x, y)
    for p_len in range(1, len(window)):
        for q_len in range(1, len(window) - p_len + 1):
            p, q = window[:p_len], window[len(window) - q_len:]
            middle = window[p_len:len(window) - q_len]
            if (p != q and other == q + middle + p and _COMPARED in middle
                    and _COMPARED not in p + q):
                return True
    return False


def _replaced_term(a: tuple[str, ...], b: tuple[str, ...], *, manner: bool = False) -> bool:
    """Whether the content words of one question are those of the other with exactly one
    replaced by a word that is no form of it, in any order and whatever the function
    words around them: "fall" for "built" once "did"/"was" are set aside. `_single_swap`
    needs the rest of the sentence equal; a changed verb usually drags an auxiliary with
    it. A paraphrase rewords more than one word, or swaps a word for a form of itself or a
    synonym (SYNONYMS)."""
    removed = list((Counter(a) - Counter(b)).elements())
    added = list((Counter(b) - Counter(a)).elements())
    # "What steps" for "how do I": the noun says what the question word does.
    if manner:
        removed = [w for w in removed if w not in MANNER_NOUNS]
        added = [w for w in added if w not in MANNER_NOUNS]
    # A comparative for its wordier form ("cheaper" / "less expensive", "heavier" / "weighs
    # more").
    directed_removed = [w for w in removed if _is_directed(w)]
    directed_added = [w for w in added if _is_directed(w)]
    if (_directions([(w, w) for w in directed_removed])
            == _directions([(w, w) for w in directed_added]) != frozenset()):
        removed = [w for w in removed if w not in directed_removed]
        added = [w for w in added if w not in directed_added]
    # Inflections and derived forms ("sink"/"sinking", "discovered"/"discoverer") pair off.
    for word in list(removed):
        twin = next((other for other in added if _same_word(word, other)), None)
        if twin is not None:
            removed.remove(word)
            added.remove(twin)
    return len(removed) == 1 and len(added) == 1


def _is_directed(word: str) -> bool:
    return word in MODIFIERS or word in MEASURE_VERBS or _direction(word) is not None


def _swapped(a: QuestionFacts, b: QuestionFacts) -> bool:
    """The same terms in another order: "is gold heavier than lead" against "is lead heavier
    than gold", "Celsius to Fahrenheit" against the reverse, "do cats eat mice" against "do
    mice eat cats". One phrase moved to the other end of the question is no swap ("Is it
    safe to drink tap water in Mexico?" / "Is tap water in Mexico safe to drink?"): the
    ordering words move with it, where a swap leaves them between the swapped terms."""
    if sorted(a.terms) != sorted(b.terms) or a.terms == b.terms:
        return False
    shared = set(a.tokens) & set(b.tokens) & ORDERING
    unordered = _units_asked_in(a) | _units_asked_in(b)
    x, y = _with_ordering(a, shared, unordered), _with_ordering(b, shared, unordered)
    return x != y and not _moved_phrase(x, y)


def _with_ordering(facts: QuestionFacts, ordering: set[str], unordered: set[str]
                   ) -> list[str]:
    terms = set(facts.terms) - unordered
    return [w for w in _canonical(facts.tokens) if w in terms or w in ordering]


def _units_asked_in(facts: QuestionFacts) -> set[str]:
    """The units a question asks its answer in ("in Celsius", "in kilometers"): such a
    phrase may stand anywhere in the question."""
    words = _canonical(facts.tokens)
    return {w for before, w in itertools.pairwise(words) if before == "in" and w in facts.units}


def _moved_phrase(x: list[str], y: list[str]) -> bool:
    """Whether y is x with two neighbouring runs exchanged: x = S + P + Q + E and
    y = S + Q + P + E."""
    if sorted(x) != sorted(y):
        return False
    window, other = _differing_window(x, y)
    return any(other == window[cut:] + window[:cut] for cut in range(1, len(window)))


def _directions_differ(a: frozenset[tuple[str, int]], b: frozenset[tuple[str, int]]) -> bool:
    if a == b:
        return False
    # An axis named on both sides with opposite signs is always a different question.
    if any(sign in (1, -1) and (axis, -sign) in b for axis, sign in a):
        return True
    # A strong direction on one side only ("more water", "the shortest") is too; a weak one
    # ("to", "on") may come and go with the wording.
    axes_a = {axis for axis, _ in a}
    axes_b = {axis for axis, _ in b}
    return bool((axes_a ^ axes_b) - WEAK_AXES)


def _order(entities: tuple[str, ...]) -> tuple[str, ...]:
    seen: list[str] = []
    names = _names(entities)
    for name in (e for e in entities if e in names):
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def verify(cached_question: str, asked_question: str) -> Rejection | None:
    """`disagreement` on two questions as written."""
    return disagreement(read_question(cached_question), read_question(asked_question))
