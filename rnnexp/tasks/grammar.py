"""Synthetic language: sentences from small grammars whose label depends on word order.

Both tasks are built so that the two labels are made of the same multiset of words: an
order-free model (a bag of words) is at chance by construction, and only a model that keeps
track of order and context can beat it. The sentences are generated as token ids, vectorised;
`decode` turns a row back into words.
"""

from __future__ import annotations

import torch

from rnnexp.tasks.base import IGNORE, SEQUENCE, STEP, SyntheticTask, TaskIO


class Lexicon:
    """Named groups of words, numbered into one vocabulary."""

    def __init__(self, **groups: tuple[str, ...]):
        self.words: list[str] = list(dict.fromkeys(w for group in groups.values() for w in group))
        ids = {w: i for i, w in enumerate(self.words)}
        self.groups = {name: torch.tensor([ids[w] for w in group]) for name, group in groups.items()}

    def __getitem__(self, group: str) -> torch.Tensor:
        return self.groups[group]

    def draw(self, group: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Ids of words drawn uniformly from `group`."""
        words = self.groups[group]
        return words[torch.randint(len(words), shape, generator=generator)]

    def decode(self, ids: torch.Tensor) -> str:
        return " ".join(self.words[i] for i in ids.tolist())


class PronounReference(SyntheticTask):
    """Which thing does the pronoun's person have? After the seed document's example ("Mark was
    reading a blog on sequence models and he got fascinated by them"):

        Mark reads a blog , Anna buys a book <distance filler words> and he   ->  blog
        Anna likes a blog , Tom writes a book <distance filler words> and he  ->  book

    Two people of different gender each get one of the two attributes (blog, book), in either
    order, then `distance` filler words, then "and he" or "and she". The label is the attribute
    of the person the pronoun refers to. Every sentence holds both attributes and one name of
    each gender, so both labels are made of the same multiset of words: a bag of words is at
    chance (0.5) by construction. Sequences have 11 + distance words.

    With `per_step=True` there is an output at every step and the label is due at the pronoun
    (the last step); other steps are not scored.

    x: (N, 11 + distance) word ids; y: (N,) attribute ids (0 blog, 1 book), or (N, 11 + distance).
    """

    name = "pronoun_reference"
    lexicon = Lexicon(
        male=("Mark", "John", "Tom", "Paul"),
        female=("Anna", "Mary", "Kate", "Lucy"),
        verb=("reads", "writes", "likes", "buys"),
        article=("a",),
        comma=(",",),
        attribute=("blog", "book"),
        conjunction=("and",),
        pronoun=("he", "she"),
        filler=(
            "then",
            "it",
            "rained",
            "for",
            "long",
            "while",
            "so",
            "the",
            "day",
            "was",
            "quiet",
            "later",
            "on",
            "at",
            "home",
        ),
    )

    def __init__(self, *, distance: int, per_step: bool, **sizes):
        super().__init__(**sizes)
        self.distance, self.per_step = distance, per_step
        self.length = 11 + distance
        self.io = TaskIO(
            vocab_size=len(self.lexicon.words), n_features=1, n_classes=2, output=STEP if per_step else SEQUENCE
        )
        self.chance_level = 0.5

    def generate(self, n, generator):
        lex, g = self.lexicon, generator
        coin = lambda: torch.randint(2, (n,), generator=g)  # noqa: E731
        male_first, blog_first, says_he = coin().bool(), coin().bool(), coin().bool()
        male, female = lex.draw("male", (n,), g), lex.draw("female", (n,), g)
        blog, book = lex["attribute"]
        first_name, second_name = torch.where(male_first, male, female), torch.where(male_first, female, male)
        first_attr, second_attr = torch.where(blog_first, blog, book), torch.where(blog_first, book, blog)
        columns = [
            first_name,
            lex.draw("verb", (n,), g),
            lex["article"].expand(n),
            first_attr,
            lex["comma"].expand(n),
            second_name,
            lex.draw("verb", (n,), g),
            lex["article"].expand(n),
            second_attr,
        ]
        x = torch.cat(
            [
                torch.stack(columns, dim=1),
                lex.draw("filler", (n, self.distance), g),
                torch.stack([lex["conjunction"].expand(n), torch.where(says_he, *lex["pronoun"])], dim=1),
            ],
            dim=1,
        )
        refers_to_first = says_he == male_first
        label = (refers_to_first == blog_first).long() ^ 1  # 0 blog, 1 book
        if not self.per_step:
            return x, label
        y = torch.full_like(x, IGNORE)
        y[:, -1] = label
        return x, y


class NegatedSentiment(SyntheticTask):
    """Is a short synthetic review positive? A negation word either precedes the sentiment word
    by `distance` words, and flips it, or follows it by `distance` words, and does not:

        the plot was not really good it seemed   ->  negative  (not ... good)
        the plot was good really not it seemed   ->  positive  (good ... not)

    The other `length - 2` words are neutral fillers. Both labels are made of the same multiset
    of words, so a bag of words is at chance (0.5) by construction, while a model that knows the
    order is not. (Cf. negation in sentiment data, e.g. Socher et al. 2013.)

    x: (N, length) word ids; y: (N,) 1 positive, 0 negative.
    """

    name = "negated_sentiment"
    lexicon = Lexicon(
        positive=("good", "great", "fine", "superb"),
        negative=("bad", "awful", "poor", "dull"),
        negation=("not",),
        filler=(
            "the",
            "movie",
            "film",
            "plot",
            "was",
            "is",
            "really",
            "quite",
            "and",
            "acting",
            "story",
            "overall",
            "it",
            "seemed",
            "honestly",
            "very",
        ),
    )

    def __init__(self, *, length: int, distance: int, **sizes):
        super().__init__(**sizes)
        self.length, self.distance = length, distance
        self.io = TaskIO(vocab_size=len(self.lexicon.words), n_features=1, n_classes=2, output=SEQUENCE)
        self.chance_level = 0.5

    def generate(self, n, generator):
        lex, g, L, d = self.lexicon, generator, self.length, self.distance
        positive = torch.randint(2, (n,), generator=g).bool()
        negation_first = torch.randint(2, (n,), generator=g).bool()
        sentiment = torch.where(positive, lex.draw("positive", (n,), g), lex.draw("negative", (n,), g))
        negation = lex["negation"].expand(n)
        x = lex.draw("filler", (n, L), g)
        rows = torch.arange(n)
        first = torch.randint(L - d, (n,), generator=g)  # the pair sits at first, first + d
        x[rows, first] = torch.where(negation_first, negation, sentiment)
        x[rows, first + d] = torch.where(negation_first, sentiment, negation)
        return x, (positive ^ negation_first).long()
