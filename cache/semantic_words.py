"""The word lists the semantic cache's verification reads questions with
(`cache.semantic_verify`): negations, numbers, units, directed words, the common words of a
few languages, modal verbs, question words, common synonyms and phrases read as one word.
Data only."""

from __future__ import annotations

import re

APOSTROPHE = "\u2019"  # a typographic apostrophe: "can\u2019t"
TOKEN = re.compile(r"[$€£%]|[\w'\u2019.-]+", re.UNICODE)

NEGATIONS = frozenset({
    "not", "no", "never", "cannot", "none", "nothing", "nobody", "neither", "nor", "without",
})

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1e6",
    "billion": "1e9", "half": "0.5", "quarter": "0.25", "dozen": "12", "twice": "x2",
    "double": "x2", "triple": "x3",
    "first": "#1", "second": "#2", "third": "#3", "fourth": "#4", "fifth": "#5",
}

# Canonical unit per spelling. Currency symbols are units too ($50 is not €50).
UNITS = {
    **dict.fromkeys(("mg", "milligram", "milligrams"), "mg"),
    **dict.fromkeys(("g", "gram", "grams", "gramm"), "g"),
    **dict.fromkeys(("kg", "kilogram", "kilograms", "kilo", "kilos"), "kg"),
    **dict.fromkeys(("tonne", "tonnes"), "t"),
    **dict.fromkeys(("ton", "tons"), "ton"),  # a short or long ton, not a tonne
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), "lb"),
    **dict.fromkeys(("oz", "ounce", "ounces"), "oz"),
    **dict.fromkeys(("ml", "milliliter", "milliliters", "millilitre", "millilitres"), "ml"),
    **dict.fromkeys(("l", "liter", "liters", "litre", "litres"), "l"),
    **dict.fromkeys(("gallon", "gallons", "gal"), "gal"),
    **dict.fromkeys(("mm", "millimeter", "millimeters"), "mm"),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), "cm"),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), "m"),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), "km"),
    **dict.fromkeys(("mile", "miles", "mi"), "mi"),
    **dict.fromkeys(("foot", "feet", "ft"), "ft"),
    **dict.fromkeys(("inch", "inches"), "in"),
    **dict.fromkeys(("yard", "yards"), "yd"),
    **dict.fromkeys(("celsius", "°c"), "C"),
    **dict.fromkeys(("fahrenheit", "°f"), "F"),
    **dict.fromkeys(("kelvin",), "K"),
    **dict.fromkeys(("second", "seconds", "sec", "secs"), "s"),
    **dict.fromkeys(("minute", "minutes", "min", "mins"), "min"),
    **dict.fromkeys(("hour", "hours", "hr", "hrs", "hourly"), "h"),
    **dict.fromkeys(("day", "days", "daily"), "day"),
    **dict.fromkeys(("week", "weeks", "weekly"), "week"),
    **dict.fromkeys(("month", "months", "monthly"), "month"),
    **dict.fromkeys(("year", "years", "yearly", "annual", "annually"), "year"),
    **dict.fromkeys(("$", "dollar", "dollars", "usd"), "USD"),
    **dict.fromkeys(("€", "euro", "euros", "eur"), "EUR"),
    **dict.fromkeys(("£", "gbp", "sterling"), "GBP"),
    **dict.fromkeys(("%", "percent", "percentage"), "%"),
    **dict.fromkeys(("calorie", "calories", "kcal", "cal"), "kcal"),
    **dict.fromkeys(("gb", "gigabyte", "gigabytes"), "GB"),
    **dict.fromkeys(("mb", "megabyte", "megabytes"), "MB"),
    **dict.fromkeys(("tb", "terabyte", "terabytes"), "TB"),
    **dict.fromkeys(("mph",), "mph"),
    **dict.fromkeys(("teaspoon", "teaspoons", "tsp"), "tsp"),
    **dict.fromkeys(("tablespoon", "tablespoons", "tbsp"), "tbsp"),
    **dict.fromkeys(("pint", "pints"), "pint"),
    **dict.fromkeys(("quart", "quarts"), "quart"),
    **dict.fromkeys(("psi",), "psi"),
    **dict.fromkeys(("watt", "watts"), "W"),
    **dict.fromkeys(("volt", "volts"), "V"),
    **dict.fromkeys(("square", "sq"), "square"),
}
# "second" is an ordinal more often than a unit; it counts as a unit only after a number.
AMBIGUOUS_UNITS = frozenset({"second", "l", "m", "g", "in", "mi", "min", "cal"})

# Directed words: (axis, sign). Two questions must agree on every axis either one names.
DIRECTIONS: dict[str, tuple[str, int]] = {
    **dict.fromkeys(("more", "most", "greater", "greatest", "increase", "over", "above",
                     "exceed", "exceeds", "too"), ("amount", 1)),
    **dict.fromkeys(("less", "least", "fewer", "fewest", "lower", "lowest", "decrease",
                     "under", "below"), ("amount", -1)),
    **dict.fromkeys(("bigger", "biggest", "larger", "largest", "big", "large", "huge"),
                    ("size", 1)),
    **dict.fromkeys(("smaller", "smallest", "small", "tiny"), ("size", -1)),
    **dict.fromkeys(("taller", "tallest", "higher", "highest", "tall", "high"), ("height", 1)),
    **dict.fromkeys(("shorter", "shortest", "short"), ("height", -1)),
    **dict.fromkeys(("longer", "longest", "long"), ("length", 1)),
    **dict.fromkeys(("deep", "deeper", "deepest"), ("depth", 1)),
    **dict.fromkeys(("shallow", "shallower", "shallowest"), ("depth", -1)),
    **dict.fromkeys(("heavier", "heaviest", "heavy", "denser", "densest"), ("weight", 1)),
    **dict.fromkeys(("lighter", "lightest", "light"), ("weight", -1)),
    **dict.fromkeys(("faster", "fastest", "quicker", "quickest", "fast", "quick"),
                    ("speed", 1)),
    **dict.fromkeys(("slower", "slowest", "slow"), ("speed", -1)),
    **dict.fromkeys(("older", "oldest", "old"), ("age", 1)),
    **dict.fromkeys(("younger", "youngest", "young", "newer", "newest"), ("age", -1)),
    **dict.fromkeys(("cheaper", "cheapest", "cheap"), ("cost", -1)),
    **dict.fromkeys(("expensive", "pricier", "priciest", "costlier"), ("cost", 1)),
    **dict.fromkeys(("easier", "easiest", "easy"), ("difficulty", -1)),
    **dict.fromkeys(("harder", "hardest", "difficult", "hard"), ("difficulty", 1)),
    **dict.fromkeys(("better", "best", "good", "safe", "safer", "safest", "healthy", "healthier",
                     "healthiest", "benefit"), ("good", 1)),
    **dict.fromkeys(("warm", "warmer", "warmest", "hot", "hotter", "hottest"), ("heat", 1)),
    **dict.fromkeys(("cold", "colder", "coldest", "cool", "cooler", "coolest"), ("heat", -1)),
    **dict.fromkeys(("worse", "worst", "bad", "unsafe", "harmful", "unhealthy", "damage",
                     "dangerous", "harm", "harms", "hurt", "hurts"), ("good", -1)),
    **dict.fromkeys(("before", "earlier", "earliest", "prior", "until"), ("time", -1)),
    **dict.fromkeys(("after", "later"), ("time", 1)),
    **dict.fromkeys(("first", "initial"), ("order", -1)),
    **dict.fromkeys(("last", "final", "latest"), ("order", 1)),
    **dict.fromkeys(("minimum", "min", "minimal"), ("bound", -1)),
    # A limit is most often a maximum ("speed limit", "weight limit").
    **dict.fromkeys(("maximum", "max", "maximal", "limit", "limits"), ("bound", 1)),
    **dict.fromkeys(("open", "opens", "opening"), ("open", 1)),
    **dict.fromkeys(("close", "closes", "closing", "closed"), ("open", -1)),
    **dict.fromkeys(("enable", "enabled", "activate", "on"), ("switch", 1)),
    **dict.fromkeys(("disable", "disabled", "deactivate", "off"), ("switch", -1)),
    **dict.fromkeys(("upgrade",), ("tier", 1)),
    **dict.fromkeys(("downgrade",), ("tier", -1)),
    **dict.fromkeys(("to", "into", "towards"), ("way", 1)),
    **dict.fromkeys(("from",), ("way", -1)),
    **dict.fromkeys(("prevent", "prevents", "stop", "avoid"), ("cause", -1)),
    **dict.fromkeys(("cause", "causes"), ("cause", 1)),
    **dict.fromkeys(("growing", "grow", "rising", "rise"), ("trend", 1)),
    **dict.fromkeys(("shrinking", "shrink", "falling"), ("trend", -1)),
}
# A verb of measure before "more" / "less" names its axis: "costs more" reads as "more
# expensive", "weighs less" as "lighter".
MEASURE_VERBS = {
    **dict.fromkeys(("cost", "costs"), "cost"),
    **dict.fromkeys(("weigh", "weighs"), "weight"),
}
# "less X" / "more X" before a directed word: "less expensive" reads as "cheaper".
MODIFIERS = {"less": -1, "more": 1, "least": -1, "most": 1}
# Axes whose words are too common in plain questions to read as a direction on their own.
WEAK_AXES = frozenset({"way", "switch", "height", "length", "cause", "place"})
# "over", "under", "above", "below" compare amounts before a number or a unit ("trucks
# over 7.5 tonnes", "over an hour late"); elsewhere they name a place or a state ("under
# warranty"), on a weak axis of their own.
POSITIONS = {"over": 1, "above": 1, "under": -1, "below": -1}
# Adverbs whose meaning is not their adjective's direction: "mostly" is "mainly", not "the
# most"; "finally" is "at last", not "the final one".
UNDIRECTED_ADVERBS = frozenset({
    "mostly", "largely", "hardly", "highly", "lately", "shortly", "finally", "firstly",
    "lastly",
})
# Words that compare two things in an order: "A bigger than B", "A before B". A question
# that names the converse relation with the two things swapped asks the same.
COMPARATORS = frozenset({"than", "before", "after"})
# Words that make the order of names matter ("A than B", "from A to B", "A or B").
ORDERING = frozenset({"than", "from", "to", "into", "vs", "versus", "or", "before", "after"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = {
    "en": _words("""
        the is are a an of to in on for what how does do can i my you your much many it
        be with and or than which who when why should there at from was were did this
        that have has get me we our per any where by need each every will would could
        been had they them their as"""),
    "fr": _words("""
        le la les est de des du un une que quel quelle qui comment combien je mon ma au
        en pour et est-ce faut-il sur dois-je au puis-je à l' d' qu'"""),
    "es": _words("""
        el la los las es de del un una que qué cuál cuáles cómo cuántas cuántos cuánto
        puedo mi con para y en hay por incluye más"""),
    "de": _words("""
        der die das ist ein eine einer von wie was wer ich mit für und nach dem den zu
        kann viele viel hoch sind haben im man um in"""),
    "it": _words("""
        il lo la è di del della degli un una che quale come quanti quanta quante mi per
        e ci sono dopo posso fu si più i in"""),
    "pt": _words("""
        o a os as é de do da um uma que qual como para com não envia em no na"""),
    "nl": _words("""
        de het een van op voor met naar hoe wat wie waar wanneer waarom hoeveel ik mijn
        kan kun moet zijn niet dat er bij"""),
}
DISTINCT = {
    lang: words - frozenset().union(*(o for other, o in STOPWORDS.items() if other != lang))
    for lang, words in STOPWORDS.items()
}
WORD_CHARS = re.compile(r"[^\W_]", re.UNICODE)

FUNCTION_WORDS = STOPWORDS["en"] | _words(
    """about am been being could would will shall might may must if so such some its it's im
    i'm way need needed okay ok right just also really please tell know like there's what's
    considered regarded through via across along onto upon toward towards""")

# After "to", the words that make it a preposition ("to the airport"), not an infinitive.
DETERMINERS = frozenset({
    "the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that",
})

# Modal verbs by what they ask: whether something is possible or allowed, or whether it is
# advised or required. "Can I take ibuprofen with food?" and "Should I ...?" differ.
MODALS = {
    **dict.fromkeys(("can", "could", "may", "might"), "possible"),
    **dict.fromkeys(("should", "must", "ought"), "advised"),
}

AUXILIARIES = frozenset({
    "is", "are", "am", "was", "were", "can", "could", "do", "does", "did", "should", "will",
    "would", "may", "might", "must", "has", "have", "had", "shall",
})
LENGTH_UNITS = frozenset({"mm", "cm", "m", "km", "mi", "ft", "in", "yd"})
TIME_UNITS = frozenset({"s", "min", "h", "day", "week", "month", "year"})
EXTENT_UNITS = LENGTH_UNITS | TIME_UNITS
MONEY_WORDS = frozenset({"cost", "costs", "price", "prices", "priced", "fee", "fees", "pay"})

SUFFIXES = ("ings", "ing", "ers", "er", "ed", "ies", "es", "s", "ly", "e")
# Derivational endings a noun of action adds to its verb ("replacement" / "replace"); only
# taken off a stem of at least four letters ("comment" is no form of "come").
NOUN_SUFFIXES = ("ments", "ment")

# Words that stand for one another in plain questions: common synonyms and the irregular
# forms of common verbs ("kept" is a form of "keep"). A word stands for another only when
# one group holds both; groups do not chain ("shop" is a "store", "store" may mean "keep",
# "shop" never does). Opposites never share a group ("buy" / "sell").
SYNONYMS: tuple[frozenset[str], ...] = tuple(_words(group) for group in (
    "allow allows allowed permit permits permitted let lets",
    "buy buys bought purchase purchases purchased",
    "keep keeps kept store stores stored",
    # Food that keeps, stays or lasts in the fridge.
    "keep keeps kept stay stays stayed last lasts lasted",
    "store stores shop shops",
    "write writes wrote written author authors",
    "cost costs price prices priced fee fees",
    "booking bookings reservation reservations",
    "fridge fridges refrigerator refrigerators refrigerated",
    "ship ships shipped shipping deliver delivers delivered delivery send sends sent sending",
    "see sees saw seen visible",
    "main primary principal chief",
    "online website web internet",
    "nearest closest nearer closer",
    "email emails e-mail e-mails",
    "register registers registered registration",
    # "the boiling point" is "the temperature at which it boils".
    "point temperature",
    "start starts started begin begins began begun",
    "end ends ended finish finishes finished",
    "fix fixes fixed repair repairs repaired",
    "choose chooses chose chosen pick picks picked select selects selected",
    "car cars automobile automobiles",
    "item items product products",
    "child children kid kids",
    "photo photos picture pictures",
    "movie movies film films",
    "doctor doctors physician physicians",
    "eat eats ate eaten",
    "take takes took taken",
    "make makes made",
    "run runs ran",
    "give gives gave given",
    "go goes went gone",
    "drive drives drove driven",
    "fly flies flew flown flight flights",
    "freeze freezes froze frozen",
    "speak speaks spoke spoken",
    "steal steals stole stolen",
    "break breaks broke broken",
    "grow grows grew grown",
    "know knows knew known",
    "pay pays paid payment payments",
    "spend spends spent",
    "teach teaches taught",
    "think thinks thought",
    "sleep sleeps slept",
    "swim swims swam swum",
    "bring brings brought",
    "catch catches caught",
    "hold holds held",
    "meet meets met",
    "fall falls fell fallen",
    "tell tells told",
    "get gets got gotten",
    "come comes came",
    "become becomes became",
    "sell sells sold",
    "lose loses lost",
    "win wins won",
    "feel feels felt",
    "sing sings sang sung",
    "hide hides hid hidden",
    "ride rides rode ridden",
    "rise rises rose risen",
    "wear wears wore worn",
    "build builds built construct constructs constructed construction",
    # General-purpose synonyms of everyday questions, not drawn from any one pair: each
    # group holds words a reworded question uses for one another.
    "show shows showed shown display displays displayed list lists listed view views",
    "see sees saw seen view views check checks checked",
    "move moves moved transfer transfers transferred",
    "adult adults grown-up grown-ups grown",
    "average mean typical usual normal standard",
    "size sizes diameter dimension dimensions",
    "unused leftover remaining spare",
    "next following upcoming",
    "insurance policy coverage cover covers covered",
    "need needs needed require requires required requirement",
    "help helps helped assist assists",
    "stop stops stopped prevent prevents prevented avoid avoids",
    "use uses used usage utilize utilise",
    "remove removes removed delete deletes deleted",
    "change changes changed alter alters",
    "get gets got obtain obtains obtained receive receives received",
    "find finds found locate locates located",
    "want wants wanted wish",
    "quick quickly fast rapid rapidly",
    "big large huge",
    "small little tiny",
    "often frequently frequency",
    "right correct proper best ideal",
    "way method methods",
    "rule rules regulation regulations",
    "job jobs work employment",
    "house houses home homes",
    "trip trips journey journeys",
    "bag bags luggage baggage suitcase suitcases",
    "leave leaves left depart departs departed departure",
    "arrive arrives arrived arrival",
    "include includes included contain contains contained",
    "happen happens happened occur occurs occurred",
    "buy buys bought get",
    "cheque cheques check checks",
    "phone phones telephone mobile cell",
    "kind kinds type types sort sorts",
    "allowed permitted legal legally law",
    "damage damages damaged harm harms harmed",
    "danger dangerous risk risky unsafe",
    "hard difficult",
    "easy easier simple",
    "begin beginning start",
    "schedule timetable",
    # A measure and the adjective that asks for it: "how deep" / "what depth".
    "deep depth",
    "long length",
    "far distance",
    "high height",
    "tall height",
    "wide width",
    "heavy weight",
    "fast speed",
    "big size",
    "old age",
    "travel travels traveled travelled ride rides commute",
))
# "How long is the warranty?" asks for its period.
DURATION_NOUNS = frozenset({"period", "duration", "length"})

# Phrases read as one word: a phrasal verb as the verb it means ("turn on" is "enable"), a
# name as its usual short form, "make up" ("how many ounces make up a pound") as "in" and
# "the number of" as what "how many" asks. Each is (words, the word as written).
PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("turn", "on"), "enable"), (("switch", "on"), "enable"),
    (("turn", "off"), "disable"), (("switch", "off"), "disable"),
    (("come", "with"), "include"), (("comes", "with"), "include"),
    (("make", "up"), "in"), (("makes", "up"), "in"),
    (("number", "of"), "of"),
    (("most", "recent"), "last"),
    # A comparison worded as a noun: "a higher temperature" is "hotter".
    (("higher", "temperature"), "hotter"), (("lower", "temperature"), "colder"),
    (("greater", "length"), "longer"), (("greater", "height"), "taller"),
    (("greater", "depth"), "deeper"), (("greater", "weight"), "heavier"),
    (("higher", "speed"), "faster"), (("lower", "speed"), "slower"),
    (("higher", "price"), "pricier"), (("lower", "price"), "cheaper"),
    (("larger", "number"), "more"), (("greater", "number"), "more"),
    (("smaller", "number"), "fewer"),
    (("largest", "number"), "most"), (("greatest", "number"), "most"),
    (("highest", "number"), "most"), (("smallest", "number"), "fewest"),
    (("get", "to"), "reach"), (("gets", "to"), "reach"),
    (("united", "states"), "US"), (("usa",), "US"), (("united", "kingdom"), "UK"),
    (("cash", "machine"), "ATM"),
    (("money", "back"), "refund"),
    (("sign", "up"), "register"), (("signing", "up"), "registering"),
    (("log", "in"), "login"), (("sign", "in"), "login"), (("log", "on"), "login"),
    (("log", "out"), "logout"), (("sign", "out"), "logout"),
)
# An order at the start of a question asks what "what" asks: "Name the longest river in
# Africa." / "What is the longest river in Africa?".
REQUESTS = frozenset({"name", "calculate", "compute", "list", "define", "tell", "give"})
# Nouns asking how something is done: "What steps unlock my SIM card?" / "How do I ...?".
# Verbs saying only that someone made a thing: "Which composer wrote the Four Seasons?"
# asks what "Who composed ...?" does.
MAKING_VERBS = frozenset({
    "create", "creates", "created", "make", "makes", "made", "write", "writes", "wrote",
    "written", "produce", "produces", "produced",
})
MANNER_NOUNS = frozenset({"step", "steps", "process", "procedure", "way", "method"})
# A kind of thing dropped from a name it leads or ends: "Mount Everest" / "Everest", "the
# Pacific Ocean" / "the Pacific".
GENERIC_NAMES = frozenset({"mount", "mt", "ocean"})

WH_WORDS = frozenset({"who", "whom", "when", "where", "what"})
PREPOSITIONS = frozenset({"in", "at", "on", "by", "for", "from"})

# Words that open a noun phrase: a word after one of them and before a shared noun
# qualifies that noun ("a sweet potato", "of salt water", "many black squares").
PHRASE_OPENERS = DETERMINERS | PREPOSITIONS | frozenset({
    "of", "to", "with", "into", "about", "over", "under", "many", "much", "each", "every",
    "per", "some", "any", "these", "those",
})

# Words that a reworded question brings or drops without changing what it asks: they
# never count as narrowing a noun ("the recommended pressure", "keeps running").
LOOSE_WORDS = frozenset({
    "recommended", "usual", "during", "between", "while", "keep", "keeps", "put", "use",
    "used", "using",
})
