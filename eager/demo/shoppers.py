"""Real shoppers to start the demo from: test users whose histories have a theme one line can name.

A visitor gives a demo seconds, so the first screen offers a few real histories, each described
in words ("nail polish fan, 12 purchases") from the titles of what they bought: the word or word
pair that most of their items share. Which users: among a seeded sample of the test split's users
with enough history, those whose items most agree on a theme, one user per theme.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases

# Words that say nothing about what a shopper likes (sizes, packaging, filler, marketing).
_GENERIC = set("""
a an and the of for with in on to by from at or as is it its this that your you our new set pack packs kit piece pieces
count ounce ounces oz fl ml mg lb lbs inch inches size large small mini travel value bottle bottles tube jar box refill
women woman womens men mens unisex professional pro formula best quality natural color colors colour shade shades
ultra super extra plus free one two three four five six 1 2 3 4 5 6 8 10 12 x
""".split())
_WORD = re.compile(r"[a-z][a-z'\-]{2,}")
# Words that name one thing many ways: counted (and shown) as that thing.
_SAME = {w: "fragrance" for w in "eau toilette parfum edt edp cologne spray perfume fragrance".split()}


@dataclass(frozen=True)
class Shopper:
    user: str
    theme: str
    history: list[str]  # item keys, oldest first
    held_out: str  # what they bought next (the test item)

    @property
    def label(self) -> str:
        return f"{self.theme} fan, {len(self.history)} purchases"


def _words(title: str) -> list[str]:
    words = [_SAME.get(w, w) for w in (w.strip("'-") for w in _WORD.findall(title.lower()))]
    words = [w for w in words if w and w not in _GENERIC]
    return [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]  # "eau de toilette" is one fragrance


def history_theme(titles: list[str]) -> tuple[str, float]:
    """The word pair (else word) most of the titles share, and the share of titles that hold it."""
    pairs, singles = Counter(), Counter()
    for title in titles:
        words = _words(title)
        # Each counted once a title, in title order: ties go to what the titles say first, on every run.
        singles.update(list(dict.fromkeys(words)))
        pairs.update(list(dict.fromkeys(f"{a} {b}" for a, b in zip(words, words[1:]))))
    n = max(len(titles), 1)
    pair, pair_count = pairs.most_common(1)[0] if pairs else ("", 0)
    word, word_count = singles.most_common(1)[0] if singles else ("", 0)
    if pair and pair_count >= max(2, 0.8 * word_count):  # the pair, where it holds nearly as often as its best word
        return pair, pair_count / n
    return word, word_count / n


def pick_shoppers(data: InteractionData, count: int = 6, seed: int = 0, sample: int = 3000,
                  min_items: int = 6, max_items: int = 20) -> list[Shopper]:
    """``count`` test users with clear, different themes (deterministic for a dataset and seed)."""
    cases = [c for c in eval_cases(data, "test", max_items) if min_items <= len(c.history) <= max_items]
    rng = random.Random(seed)
    cases = rng.sample(cases, min(sample, len(cases)))
    titles, keys = data.titles, data.item_keys
    scored = []
    for case in cases:
        theme, share = history_theme([titles[i] for i in case.history])
        if theme:
            scored.append((share, len(case.history), theme, case))
    scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
    chosen: list[Shopper] = []
    used: set[str] = set()
    for _, _, theme, case in scored:
        if any(w in used for w in theme.split()):
            continue  # one shopper a theme
        used.update(theme.split())
        shown = _as_written(theme, [titles[i] for i in case.history])
        chosen.append(Shopper(data.user_keys[case.user], shown, [keys[i] for i in case.history], keys[case.target]))
        if len(chosen) == count:
            break
    return chosen


def _as_written(theme: str, titles: list[str]) -> str:
    """The theme as the titles write it ("OPI", "Burt's Bees"), else capitalised."""
    pattern = re.compile(r"\b" + r"\W+".join(re.escape(w) for w in theme.split()) + r"\b", re.IGNORECASE)
    for title in titles:
        found = pattern.search(title)
        if found:
            text = found.group(0)
            return text if any(c.isupper() for c in text) and not text.isupper() or len(text) <= 4 else text.capitalize()
    return theme.capitalize()
