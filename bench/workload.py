"""A seeded, realistic mixed workload for the headline benchmark: the same work sent the
naive way and through penny, scored automatically.

    .venv/bin/python bench/workload.py [--items 400] [--seed 7] [--output var/bench/workload.jsonl]

Like a real product it has several features (each a metadata tag with a long shared system
prompt of roughly 1,000 tokens): FAQ answers, ticket classification, short summaries,
extraction to JSON and a few multi-step arithmetic items, about 60/30/10 simple/medium/
complex. A quarter of the requests repeat or rephrase an earlier one, some on a later day;
`max_tokens` is set generously, as applications set it; arrivals come in bursts; a few
requests are sent again as client retries. Every item carries the answer it is scored on.

Each line of the output is one request:
    {"id", "day", "at" (seconds into its day), "feature", "difficulty", "messages",
     "max_tokens", "check": {"kind", ...}, "repeat_of", "retry_of"}
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# The store the FAQ and summaries talk about. Facts are short so an answer can be checked
# by whether it contains the fact.
FACTS: list[tuple[str, list[str], str]] = [
    # (topic, ways users ask, the fact an answer must contain)
    ("returns", ["How many days do I have to return an item?",
                 "What is the return window?",
                 "Until when can I send something back?"], "30"),
    ("shipping", ["How long does standard shipping take?",
                  "When will my standard delivery arrive?",
                  "How many days is standard shipping?"], "5"),
    ("express", ["How much does express shipping cost?",
                 "What is the price of express delivery?",
                 "Express shipping fee?"], "12"),
    ("warranty", ["How long is the warranty on headphones?",
                  "What warranty do headphones have?",
                  "Headphone warranty length?"], "2"),
    ("support_hours", ["When is phone support open?",
                       "What are your phone support hours?",
                       "At what time does phone support open?"], "8"),
    ("gift_cards", ["Do gift cards expire?",
                    "Is there an expiry date on gift cards?",
                    "How long are gift cards valid?"], "never"),
    ("price_match", ["Do you match competitor prices?",
                     "Is there a price match policy?",
                     "Will you match a lower price elsewhere?"], "yes"),
    ("student", ["Is there a student discount?",
                 "How much is the student discount?",
                 "Do students get money off?"], "10"),
    ("pickup", ["Can I pick up my order in a store?",
                "Is in-store pickup available?",
                "Can I collect my order at a shop?"], "yes"),
    ("loyalty", ["How many points do I earn per dollar?",
                 "What is the loyalty points rate?",
                 "Points per dollar spent?"], "1"),
]

FAQ_POLICY = {
    "returns": "Items can be returned within 30 days of delivery for a full refund.",
    "shipping": "Standard shipping takes 5 business days within the country.",
    "express": "Express shipping costs 12 dollars and arrives the next business day.",
    "warranty": "Headphones carry a 2 year warranty; other electronics carry 1 year.",
    "support_hours": "Phone support is open from 8 am to 6 pm, Monday to Friday.",
    "gift_cards": "Gift cards never expire and can be used online and in stores.",
    "price_match": "Yes, we match the price of any major competitor within 14 days.",
    "student": "Students get a 10 percent discount with a valid student card.",
    "pickup": "Yes, orders can be picked up in any store after 2 hours.",
    "loyalty": "Members earn 1 point per dollar spent; 100 points are worth 5 dollars.",
}

LABELS = ["billing", "shipping", "technical", "account"]
TICKETS: dict[str, list[str]] = {
    "billing": ["I was charged twice for order {order}.",
                "My invoice for order {order} shows the wrong amount.",
                "Please refund the duplicate payment on order {order}."],
    "shipping": ["My parcel for order {order} has not arrived yet.",
                 "The tracking for order {order} has not moved in a week.",
                 "Order {order} was delivered to the wrong address."],
    "technical": ["The headphones from order {order} do not pair with my phone.",
                  "The app crashes when I open order {order}.",
                  "My speaker from order {order} will not turn on."],
    "account": ["I cannot log in to my account since yesterday.",
                "Please change the email address on my account.",
                "I forgot my password and the reset mail never comes."],
}
NAMES = ["Alice Martin", "Bruno Costa", "Chen Wei", "Dana Novak", "Emeka Obi", "Farah Haddad",
         "Goran Petrov", "Hana Sato", "Ines Duarte", "Jonas Berg"]

# Long shared system prompts: what real features send ahead of every request, and what the
# prefix cache computes once.
_STYLE = (
    "Always be polite, precise and brief. Never invent policies that are not listed. If the "
    "customer is upset, acknowledge it in a few words and move on to the answer. Do not use "
    "markdown, lists or emojis. Use the customer's language. Keep personal data private and "
    "never repeat a full card number, password or address back to the customer. "
)


def _system(role: str, body: str) -> str:
    # ~1,000 tokens: the role, the rules, the knowledge, and the house style repeated as
    # real prompts accumulate it.
    return f"{role}\n\n{body}\n\n" + _STYLE * 12


SYSTEM_PROMPTS = {
    "faq": _system("You are the customer help assistant of Northwind, an online electronics "
                   "store. Answer the customer's question in one short sentence using only "
                   "the policies below.",
                   "Policies:\n" + "\n".join(f"- {p}" for p in FAQ_POLICY.values())),
    "classify": _system("You route Northwind support tickets. Reply with exactly one word, "
                        "the category of the ticket: billing, shipping, technical or account.",
                        "Categories: billing (charges, refunds, invoices); shipping (delivery,"
                        " tracking, addresses); technical (devices, app, pairing); account "
                        "(login, password, email)."),
    "summarize": _system("You summarise Northwind support conversations for the next agent "
                         "in one sentence that names the customer and the problem.",
                         "The summary must name the customer and the order number if any."),
    "extract": _system("You extract fields from Northwind support tickets. Reply with only a "
                       "JSON object with the keys name and order_id, no other text.",
                       'Example: {"name": "Ada Lovelace", "order_id": "A1234"}'),
    "reasoning": _system("You are Northwind's pricing assistant. Work the arithmetic out "
                         "step by step and end with 'Answer: N' where N is a whole number.",
                         "Prices are in whole dollars. Discounts apply before shipping."),
}

# Generous limits, as applications set them: far above what each feature uses.
MAX_TOKENS = {"faq": 512, "classify": 256, "summarize": 512, "extract": 512, "reasoning": 1024}
DIFFICULTY = {"faq": "simple", "classify": "medium", "summarize": "medium",
              "extract": "medium", "reasoning": "complex"}


@dataclass
class Item:
    id: str
    day: int
    at: float
    feature: str
    difficulty: str
    messages: list[dict[str, str]]
    max_tokens: int
    check: dict[str, Any]
    repeat_of: str | None = None
    retry_of: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _order(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGH')}{rng.randint(1000, 9999)}"


def _fresh(rng: random.Random, feature: str, number: int) -> tuple[str, dict[str, Any]]:
    """A new user message for `feature` and the check its answer is scored on."""
    if feature == "faq":
        _, asks, fact = rng.choice(FACTS)
        return rng.choice(asks), {"kind": "contains", "any": [fact]}
    if feature == "classify":
        label = rng.choice(LABELS)
        text = rng.choice(TICKETS[label]).format(order=_order(rng))
        return f"Ticket: {text}", {"kind": "label", "label": label, "labels": LABELS}
    if feature == "summarize":
        name, order = rng.choice(NAMES), _order(rng)
        label = rng.choice(LABELS[:3])
        text = rng.choice(TICKETS[label]).format(order=order)
        convo = (f"Customer {name}: Hello. {text} I need this sorted quickly.\n"
                 f"Agent: Sorry to hear that, {name.split()[0]}. Let me check order {order}.\n"
                 f"Customer {name}: Thank you, I have been waiting for days.")
        return f"Conversation:\n{convo}", {"kind": "contains", "any": [name.split()[0]]}
    if feature == "extract":
        name, order = rng.choice(NAMES), _order(rng)
        label = rng.choice(LABELS[:3])
        text = rng.choice(TICKETS[label]).format(order=order)
        return (f"Ticket from {name}: {text}",
                {"kind": "json_fields", "fields": {"name": name, "order_id": order}})
    price, count, off, ship = (rng.randint(5, 40), rng.randint(2, 6), rng.choice([10, 20, 50]),
                               rng.choice([0, 5, 12]))
    total = price * count * (100 - off) // 100 + ship
    question = (f"A customer buys {count} cables at {price} dollars each with a {off} percent "
                f"discount and {ship} dollars shipping. What do they pay in total? "
                f"(Round the discounted price down to whole dollars.)")
    return question, {"kind": "number", "value": total, "id": number}


REPHRASINGS = [
    ("How", "Please tell me how"), ("What", "Could you tell me what"), ("?", ", please?"),
]


def _rephrase(rng: random.Random, text: str) -> str:
    # A reworded repeat: same meaning, different bytes, as users retype questions.
    source, target = rng.choice(REPHRASINGS)
    changed = text.replace(source, target, 1)
    return changed if changed != text else f"Quick question: {text}"


def generate(items: int, seed: int, days: int = 2, repeat_share: float = 0.25,
             retry_share: float = 0.02) -> list[Item]:
    rng = random.Random(seed)
    features = rng.choices(["faq", "classify", "summarize", "extract", "reasoning"],
                           weights=[60, 12, 9, 9, 10], k=items)
    out: list[Item] = []
    burst_start = 0.0
    for number, feature in enumerate(features):
        day = 0 if number < items * 0.7 else min(days - 1, 1 + (number % max(1, days - 1)))
        if rng.random() < 0.1:  # a new burst begins: quiet, then many requests at once
            burst_start += rng.uniform(5, 30)
        at = burst_start + rng.expovariate(20.0)
        earlier = [i for i in out if i.feature == feature and i.repeat_of is None]
        if earlier and rng.random() < repeat_share:
            source = rng.choice(earlier)
            user = source.messages[-1]["content"]
            if feature == "faq" and rng.random() < 0.5:
                user = _rephrase(rng, user)
            messages = [source.messages[0], {"role": "user", "content": user}]
            out.append(Item(f"req-{number:05d}", day, at, feature, source.difficulty,
                            messages, source.max_tokens, source.check, repeat_of=source.id))
            continue
        user, check = _fresh(rng, feature, number)
        messages = [{"role": "system", "content": SYSTEM_PROMPTS[feature]},
                    {"role": "user", "content": user}]
        out.append(Item(f"req-{number:05d}", day, at, feature, DIFFICULTY[feature], messages,
                        MAX_TOKENS[feature], check))
    # Client retries: the same request sent again shortly after (a timeout on the client).
    for source in rng.sample(out, k=int(len(out) * retry_share)):
        out.append(Item(f"{source.id}-retry", source.day, source.at + rng.uniform(1, 10),
                        source.feature, source.difficulty, source.messages, source.max_tokens,
                        source.check, retry_of=source.id))
    out.sort(key=lambda i: (i.day, i.at, i.id))
    return out


_NUMBER = re.compile(r"-?\d+")


def score(check: dict[str, Any], text: str) -> bool:
    """Whether `text` is a correct answer by the item's check."""
    kind = check["kind"]
    lowered = text.lower()
    if kind == "contains":
        return any(str(a).lower() in lowered for a in check["any"])
    if kind == "label":
        found = [label for label in check["labels"] if label in lowered]
        return found == [check["label"]]
    if kind == "json_fields":
        start, end = text.find("{"), text.rfind("}")
        try:
            parsed = json.loads(text[start:end + 1]) if start >= 0 else None
        except json.JSONDecodeError:
            return False
        return isinstance(parsed, dict) and all(
            str(parsed.get(k, "")).strip() == v for k, v in check["fields"].items())
    if kind == "number":
        # The number after the last "answer", or else the last number in the text.
        if "answer" in lowered:
            numbers = _NUMBER.findall(lowered.rsplit("answer", 1)[1])[:1]
        else:
            numbers = _NUMBER.findall(lowered)[-1:]
        return bool(numbers) and int(numbers[0]) == check["value"]
    raise ValueError(f"unknown check kind {kind!r}")


def read(path: Path) -> Iterator[Item]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield Item(**json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO / "var" / "bench" / "workload.jsonl")
    args = parser.parse_args()
    items = generate(args.items, args.seed, args.days)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(asdict(item)) + "\n")
    by_feature: dict[str, int] = {}
    for item in items:
        by_feature[item.feature] = by_feature.get(item.feature, 0) + 1
    repeats = sum(1 for i in items if i.repeat_of)
    retries = sum(1 for i in items if i.retry_of)
    later = sum(1 for i in items if i.day > 0)
    print(f"{len(items)} requests -> {args.output}")
    print("by feature: " + ", ".join(f"{k} {v}" for k, v in sorted(by_feature.items())))
    print(f"repeats or rephrasings: {repeats} ({repeats / len(items):.0%}), "
          f"client retries: {retries}, on a later day: {later}")


if __name__ == "__main__":
    main()
