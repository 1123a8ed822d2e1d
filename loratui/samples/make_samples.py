"""Rewrite the shipped sample datasets, deterministically (same bytes on every run).

    python loratui/samples/make_samples.py          # rewrite the files next to this script
    python loratui/samples/make_samples.py --check  # exit 1 if a file differs from what would be written

Samples (use them as ``data.source: sample:NAME``):
- contacts-json.jsonl / contacts-json-eval.jsonl: alpaca format; pull a contact out of a free-form sentence as one
  exact JSON line. The SmolLM2-135M-Instruct demo: the base model rarely answers with exactly this JSON, a LoRA run of a
  few CPU minutes makes it do so on held-out names and cities (names, surnames and cities in the eval file never
  appear in the training file).
- sentiment.csv / sentiment-eval.csv: classification (text,label with negative/positive); templated product and movie
  reviews with negation and contrast ("not bad", "hardly worth it", "I expected to hate it, but ...") so that word
  counting is not enough; balanced classes, so a random classifier scores about 50%.
- reviews3.csv / reviews3-eval.csv: 3-class classification (negative/neutral/positive), the tutorial's first
  challenge; the sentiment sentences above plus middling and mixed reviews ("does the job, nothing special", "the
  sound is great, but the battery life is poor") as the neutral class; balanced, so chance is about 33%.
- chat-sample.jsonl: chat format (messages), some with a system message, some multi-turn.
- text-sample.jsonl: text format (plain text, loss on every token).

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611

# ---------------------------------------------------------------------------------------------------------------
# contacts: alpaca, instruction -> exact JSON
# ---------------------------------------------------------------------------------------------------------------

CONTACT_INSTRUCTION = "Extract the contact as JSON with keys name, city, email."

FIRST_NAMES = [
    "Maria", "James", "Aisha", "Liam", "Sofia", "Noah", "Chen", "Olivia", "Mateo", "Emma", "Ravi", "Hannah",
    "Lucas", "Yuki", "Ethan", "Fatima", "Oscar", "Grace", "Diego", "Chloe", "Ivan", "Amara", "Felix", "Nora",
    "Omar", "Clara", "Hugo", "Leila", "Samuel", "Zoe", "Arjun", "Ingrid", "Marco", "Priya", "Tomas", "Elena",
    "Kofi", "Julia", "Andre", "Mei", "Victor", "Sara", "Daniel", "Lena", "Pablo", "Anya", "Henry", "Rosa",
    "Kenji", "Alice", "Bruno", "Dana", "Elias", "Freya", "Gabriel", "Iris", "Jonas", "Kira", "Leon", "Maya",
    "Nadia", "Owen", "Paula", "Rafael", "Selma", "Theo", "Uma", "Vera", "Wes", "Xenia", "Yusuf", "Zara",
]
LAST_NAMES = [
    "Lopez", "Smith", "Khan", "Murphy", "Rossi", "Johnson", "Wang", "Brown", "Garcia", "Muller", "Patel", "Schmidt",
    "Silva", "Tanaka", "Walker", "Hassan", "Nilsson", "Kim", "Fernandez", "Dubois", "Petrov", "Okafor", "Weber",
    "Larsen", "Haddad", "Novak", "Moreau", "Rahimi", "Carter", "Young", "Mehta", "Berg", "Conti", "Sharma", "Horvat",
    "Costa", "Mensah", "Keller", "Baptiste", "Zhou", "Romero", "Cohen", "Fischer", "Lindqvist", "Ortega", "Ivanova",
    "Turner", "Ramos", "Sato", "Bennett", "Duarte", "Eriksen", "Fontaine", "Gallagher", "Hoffman", "Iyer", "Jensen",
    "Kowalski", "Lindgren", "Marsh", "Nakamura", "Olsen", "Pereira", "Quinn", "Reyes", "Stone", "Torres", "Varga",
]
CITIES = [
    "Denver", "Boston", "Austin", "Seattle", "Chicago", "Madrid", "Lisbon", "Berlin", "Dublin", "Toronto", "Sydney",
    "Osaka", "Nairobi", "Lyon", "Porto", "Oslo", "Vienna", "Prague", "Munich", "Milan", "Phoenix", "Portland",
    "Atlanta", "Dallas", "Miami", "Houston", "Vancouver", "Melbourne", "Auckland", "Cape Town", "San Diego",
    "New Orleans", "Salt Lake City", "Buenos Aires", "Mexico City", "Rotterdam", "Antwerp", "Krakow", "Tallinn",
    "Helsinki", "Seville", "Valencia", "Bologna", "Zurich", "Geneva", "Edinburgh", "Glasgow", "Leeds", "Bristol",
    "Calgary", "Ottawa", "Montreal", "Perth", "Brisbane", "Kyoto", "Busan", "Pune", "Accra", "Lagos", "Tunis",
]
# held out: names, surnames and cities of the eval file never occur in the training file
EVAL_FIRST, EVAL_LAST, EVAL_CITIES = FIRST_NAMES[-12:], LAST_NAMES[-12:], CITIES[-10:]
TRAIN_FIRST, TRAIN_LAST, TRAIN_CITIES = FIRST_NAMES[:-12], LAST_NAMES[:-12], CITIES[:-10]

DOMAINS = ["example.org", "example.com", "example.net", "mail.example.com", "example.co.uk", "corp.example"]
EMAIL_STYLES = [
    lambda f, l: f"{f}.{l}",
    lambda f, l: f"{f[0]}{l}",
    lambda f, l: f"{f}_{l}",
    lambda f, l: f"{f}{l[0]}",
    lambda f, l: f"{l}.{f}",
    lambda f, l: f"{f}",
]
CONTACT_TEMPLATES = [
    "Hi, this is {name} from {city}, write to {email}",
    "Hi, this is {name} from {city}. You can write to me at {email}.",
    "My name is {name}, I live in {city} and my email is {email}.",
    "{name} ({city}) - {email}",
    "Contact: {name}, based in {city}. Email: {email}",
    "Please reach out to {name} in {city} via {email}.",
    "New signup from {city}: {name}, {email}",
    "{email} belongs to {name}, who works out of our {city} office.",
    "Met {name} at the {city} conference; their email is {email}.",
    "You can email {name} at {email}. Located in {city}.",
    "From: {name} <{email}>\nLocation: {city}",
    "Name: {name} | City: {city} | Email: {email}",
    "Send the invoice to {name} at {email}, {city} branch.",
    "{name} just moved to {city}; the new address is {email}.",
    "Greetings from {city}! {name} here, reply to {email} please.",
    "Could you add {name} from {city}? Email {email}.",
    "Forwarding a lead: {name}, {email}, {city}.",
    "Our {city} customer {name} asked to be contacted at {email}.",
    "Ping {email} ({name}, {city}) about the order.",
    "Thanks,\n{name}\n{city}\n{email}",
    "The new hire in {city} is {name}; reach them at {email}.",
    "{name} from {city} wants a demo. Their email: {email}",
    "hey it's {name} in {city}, my mail is {email}",
    "Booking for {name} ({email}), travelling from {city}.",
]


def _contact_rows(rng: random.Random, n: int, firsts, lasts, cities, seen: set) -> list[dict]:
    rows = []
    while len(rows) < n:
        first, last, city = rng.choice(firsts), rng.choice(lasts), rng.choice(cities)
        name = f"{first} {last}"
        local = rng.choice(EMAIL_STYLES)(first.lower(), last.lower())
        email = f"{local}@{rng.choice(DOMAINS)}"
        text = rng.choice(CONTACT_TEMPLATES).format(name=name, city=city, email=email)
        if text in seen:
            continue
        seen.add(text)
        output = json.dumps({"name": name, "city": city, "email": email}, ensure_ascii=False)
        rows.append({"instruction": CONTACT_INSTRUCTION, "input": text, "output": output})
    return rows


def contacts(rng: random.Random) -> tuple[list[dict], list[dict]]:
    seen: set = set()
    train = _contact_rows(rng, 800, TRAIN_FIRST, TRAIN_LAST, TRAIN_CITIES, seen)
    evaluation = _contact_rows(rng, 80, EVAL_FIRST, EVAL_LAST, EVAL_CITIES, seen)
    return train, evaluation


# ---------------------------------------------------------------------------------------------------------------
# sentiment: classification with negation and contrast
# ---------------------------------------------------------------------------------------------------------------

PRODUCTS = [
    "blender", "pair of headphones", "phone case", "laptop stand", "coffee grinder", "backpack", "desk lamp",
    "keyboard", "water bottle", "vacuum cleaner", "smartwatch", "rice cooker", "office chair", "tent", "printer",
    "electric kettle", "pair of running shoes", "monitor", "toaster", "bluetooth speaker",
]
MOVIES = ["movie", "film", "sequel", "documentary", "thriller", "comedy", "animated film", "drama", "series finale",
          "horror movie"]
PRODUCT_ASPECTS = ["build quality", "battery life", "price", "design", "customer service", "packaging", "sound",
                   "setup", "material"]
MOVIE_ASPECTS = ["acting", "plot", "soundtrack", "pacing", "dialogue", "ending", "cinematography", "script", "cast"]
POS_ADJ = ["great", "excellent", "wonderful", "fantastic", "solid", "impressive", "delightful", "superb",
           "brilliant", "lovely", "outstanding", "enjoyable"]
NEG_ADJ = ["terrible", "awful", "disappointing", "boring", "flimsy", "useless", "dull", "mediocre", "poor",
           "frustrating", "clumsy", "forgettable"]
# a negated adjective flips the polarity: "not bad" is praise, "not great" is a complaint
NEG_SOFT = ["bad", "awful", "terrible", "boring", "disappointing", "a waste of money", "a letdown"]
POS_SOFT = ["great", "good", "worth it", "impressive", "any good", "what I hoped for", "worth the hype"]
NEG_ASPECT = ["bad", "awful", "terrible", "disappointing", "a problem"]
POS_ASPECT = ["great", "good", "impressive", "any good", "what I hoped for"]

POS_VERDICTS = [
    "Worth every penny.", "I would recommend it to anyone.", "Highly recommended.", "I would buy it again.",
    "It never disappoints.", "Not a single complaint.", "Five stars from me.", "I can't recommend it enough.",
    "Definitely worth it.", "Better than I expected.", "I'm glad I gave it a chance.", "Can't wait to use it again.",
]
NEG_VERDICTS = [
    "Hardly worth it.", "I would not recommend it.", "Save your money.", "Never again.", "Hardly worth the price.",
    "I want a refund.", "What a waste of time.", "Avoid.", "I regret it.", "Not worth the hype.",
    "Worse than I expected.", "I expected more.",
]
NEUTRAL = [
    "I bought it last month.", "We watched it on Friday night.", "It arrived on Tuesday.", "My sister gave it to me.",
    "I have had it for two weeks.", "We saw it at the cinema downtown.", "It came in a blue box.",
    "I used it every day this week.", "A friend suggested it.", "It was on sale.",
]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _sentiment_sentence(rng: random.Random, positive: bool, thing: str, aspects: list[str]) -> str:
    kind = rng.randrange(8)
    if kind == 0:  # plain
        adj = rng.choice(POS_ADJ if positive else NEG_ADJ)
        return rng.choice([f"The {thing} is {adj}.", f"This {thing} was {adj}.", f"Honestly {_a(adj)} {adj} {thing}."])
    if kind == 1:  # negation flips the word's polarity
        adj = rng.choice(NEG_SOFT if positive else POS_SOFT)
        return rng.choice([f"The {thing} is not {adj} at all.", f"Honestly, this {thing} was not {adj}.",
                           f"It's not {adj}, I have to say."] if positive else
                          [f"The {thing} is not {adj}.", f"Sadly, this {thing} was not {adj}.",
                           f"It's not {adj}, I have to say."])
    if kind == 2:  # aspect
        aspect = rng.choice(aspects)
        adj = rng.choice(POS_ADJ if positive else NEG_ADJ)
        return f"The {aspect} is {adj}."
    if kind == 3:  # negated aspect
        aspect = rng.choice(aspects)
        adj = rng.choice(NEG_ASPECT if positive else POS_ASPECT)
        return f"The {aspect} was not {adj}."
    if kind == 4:  # contrast: the last clause decides
        first = rng.choice(NEG_ADJ if positive else POS_ADJ)
        last = rng.choice(POS_ADJ if positive else NEG_ADJ)
        return rng.choice([f"I expected it to be {first}, but it turned out {last}.",
                           f"It looked {first} at first, but the {thing} is actually {last}.",
                           f"The {rng.choice(aspects)} seemed {first}; overall though, {last}."])
    if kind == 5:  # verdict
        return rng.choice(POS_VERDICTS if positive else NEG_VERDICTS)
    if kind == 6:  # hardly / barely
        movie = thing in MOVIES
        if positive:
            return rng.choice([f"I hardly noticed any flaws in the {thing}.",
                               f"There is barely anything to dislike about the {thing}.",
                               "I could hardly look away." if movie else "It hardly needs any care."])
        return rng.choice([f"The {thing} is hardly worth mentioning.",
                           "I could barely stay awake." if movie else f"The {thing} barely works.",
                           f"There is hardly anything to like about the {thing}."])
    # intensified
    adj = rng.choice(POS_ADJ if positive else NEG_ADJ)
    return f"{rng.choice(['Really', 'Truly', 'Absolutely', 'Pretty', 'Quite'])} {adj} {thing}."


def _review(rng: random.Random, positive: bool) -> str:
    if rng.random() < 0.5:
        thing, aspects = rng.choice(PRODUCTS), PRODUCT_ASPECTS
    else:
        thing, aspects = rng.choice(MOVIES), MOVIE_ASPECTS
    parts = [_sentiment_sentence(rng, positive, thing, aspects) for _ in range(rng.choice([1, 1, 2, 2, 3]))]
    if rng.random() < 0.4:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(NEUTRAL))
    return " ".join(p[0].upper() + p[1:] for p in parts)


def sentiment(rng: random.Random) -> tuple[list[dict], list[dict]]:
    seen: set = set()

    def rows(n: int) -> list[dict]:
        out = []
        while len(out) < n:
            positive = len(out) % 2 == 0  # balanced, alternating
            text = _review(rng, positive)
            if text in seen:
                continue
            seen.add(text)
            out.append({"text": text, "label": "positive" if positive else "negative"})
        rng.shuffle(out)
        return out

    return rows(2400), rows(400)


# ---------------------------------------------------------------------------------------------------------------
# reviews3: three classes, the neutral one made of middling and mixed reviews
# ---------------------------------------------------------------------------------------------------------------

MID_ADJ = ["okay", "average", "fine", "decent enough", "alright", "so-so", "passable", "acceptable", "ordinary"]
MID_VERDICTS = [
    "It does the job, nothing more.", "Nothing special.", "Three stars.", "I have mixed feelings about it.",
    "It's fine for the price.", "Neither great nor terrible.", "It meets expectations, no more, no less.",
    "Some parts work, some don't.", "I neither love it nor hate it.", "Not bad, not great.",
    "It's about what you would expect.", "Hard to say if I'd buy it again.",
]


def _neutral_sentence(rng: random.Random, thing: str, aspects: list[str]) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # middling adjective
        adj = rng.choice(MID_ADJ)
        return rng.choice([f"The {thing} is {adj}.", f"This {thing} was {adj}.", f"An {adj} {thing}, really."
                           if adj[0] in "aeiou" else f"A {adj} {thing}, really."])
    if kind == 1:  # mixed aspects: one good, one bad
        a1, a2 = rng.sample(aspects, 2)
        good, bad = rng.choice(POS_ADJ), rng.choice(NEG_ADJ)
        if rng.random() < 0.5:
            return f"The {a1} is {good}, but the {a2} is {bad}."
        return f"The {a1} is {bad}, but the {a2} is {good}."
    if kind == 2:  # middling aspect
        return f"The {rng.choice(aspects)} is {rng.choice(MID_ADJ)}."
    if kind == 3:  # balanced contrast
        good, bad = rng.choice(POS_ADJ), rng.choice(NEG_ADJ)
        return rng.choice([f"Parts of it are {good} and parts are {bad}; it evens out.",
                           f"Some days it feels {good}, other days {bad}.",
                           f"I expected it to be {good} or {bad}; it is just {rng.choice(MID_ADJ)}."])
    return rng.choice(MID_VERDICTS)


def _review3(rng: random.Random, label: str) -> str:
    if rng.random() < 0.5:
        thing, aspects = rng.choice(PRODUCTS), PRODUCT_ASPECTS
    else:
        thing, aspects = rng.choice(MOVIES), MOVIE_ASPECTS
    n = rng.choice([1, 1, 2, 2, 3])
    if label == "neutral":
        parts = [_neutral_sentence(rng, thing, aspects) for _ in range(n)]
    else:
        parts = [_sentiment_sentence(rng, label == "positive", thing, aspects) for _ in range(n)]
    if rng.random() < 0.4:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(NEUTRAL))
    return " ".join(p[0].upper() + p[1:] for p in parts)


def reviews3(rng: random.Random) -> tuple[list[dict], list[dict]]:
    seen: set = set()
    labels = ["negative", "neutral", "positive"]

    def rows(n: int) -> list[dict]:
        out = []
        while len(out) < n:
            label = labels[len(out) % 3]  # balanced
            text = _review3(rng, label)
            if text in seen:
                continue
            seen.add(text)
            out.append({"text": text, "label": label})
        rng.shuffle(out)
        return out

    return rows(1500), rows(300)


# ---------------------------------------------------------------------------------------------------------------
# chat and text samples
# ---------------------------------------------------------------------------------------------------------------

SYSTEMS = ["You are a concise assistant.", "You are a friendly math tutor. Answer in one sentence."]
UNITS = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000),
         ("minutes", "seconds", 60), ("metres", "centimetres", 100)]


def chat(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(40):
        messages = []
        if i % 4 == 0:
            messages.append({"role": "system", "content": SYSTEMS[(i // 4) % 2]})
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        if i % 3 == 0:
            big, small, factor = UNITS[i % len(UNITS)]
            answer = a * factor
            messages += [{"role": "user", "content": f"How many {small} are in {a} {big}?"},
                         {"role": "assistant", "content": f"{a} {big} is {answer} {small}."}]
        else:
            answer = a + b
            messages += [{"role": "user", "content": f"What is {a} + {b}?"},
                         {"role": "assistant", "content": f"{a} + {b} = {answer}."}]
        if i % 2 == 1:  # multi-turn
            c = rng.randint(2, 9)
            messages += [{"role": "user", "content": f"And that times {c}?"},
                         {"role": "assistant", "content": f"{answer} x {c} = {answer * c}."}]
            if i % 5 == 1:
                messages += [{"role": "user", "content": "Thanks!"},
                             {"role": "assistant", "content": "You're welcome."}]
        rows.append({"messages": messages})
    return rows


TEXT_SUBJECTS = ["A kettle", "The river", "Every library", "A good map", "The night train", "An old clock",
                 "The garden", "A lighthouse", "The market", "A notebook"]
TEXT_PREDICATES = ["keeps its own small promises", "sounds different in winter", "remembers more than it says",
                   "is busiest just before dawn", "rewards the patient visitor", "hides a story in every corner",
                   "changes when nobody is watching", "is best shared with a friend"]
TEXT_ENDINGS = ["That is why people return to it.", "Nobody quite knows why.", "It has always been this way.",
                "Some say it is luck.", "Ask anyone in town."]


def text(rng: random.Random) -> list[dict]:
    rows = []
    while len(rows) < 40:
        line = f"{rng.choice(TEXT_SUBJECTS)} {rng.choice(TEXT_PREDICATES)}. {rng.choice(TEXT_ENDINGS)}"
        if {"text": line} not in rows:
            rows.append({"text": line})
    return rows


# ---------------------------------------------------------------------------------------------------------------


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def build_rows() -> dict[str, list[dict]]:
    """File name -> rows. Each dataset has its own seeded generator, so editing one leaves the others alone."""
    c_train, c_eval = contacts(random.Random(SEED))
    s_train, s_eval = sentiment(random.Random(SEED + 1))
    r_train, r_eval = reviews3(random.Random(SEED + 4))
    return {
        "contacts-json.jsonl": c_train,
        "contacts-json-eval.jsonl": c_eval,
        "sentiment.csv": s_train,
        "sentiment-eval.csv": s_eval,
        "reviews3.csv": r_train,
        "reviews3-eval.csv": r_eval,
        "chat-sample.jsonl": chat(random.Random(SEED + 2)),
        "text-sample.jsonl": text(random.Random(SEED + 3)),
    }


def build() -> dict[str, str]:
    """File name -> file content."""
    return {name: (_csv if name.endswith(".csv") else _jsonl)(rows) for name, rows in build_rows().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report files that differ, write nothing")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: next to this script)")
    args = parser.parse_args(argv)
    differ = []
    for name, rows in build_rows().items():
        content = (_csv if name.endswith(".csv") else _jsonl)(rows)
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                differ.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"{path}: {len(rows)} rows")
    if differ:
        print("out of date: " + ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
