"""A deterministic word tokenizer with no data files: a stand-in for NLTK's ``word_tokenize``.

The original loader (multimodal-contrastive-learning ``datasets.py`` lines 135-148) splits the
caption file with NLTK's ``sent_tokenize`` (Punkt, a pickled model downloaded at run time) and
each sentence with ``word_tokenize`` (the Treebank rules). ident3d never downloads or unpickles
anything, so it reads one sentence per line (the generator writes one per line,
generate_text.py lines 64-75) and applies the subset of NLTK's Treebank regular expressions
that these captions can meet (starting and ending double quotes, ``:`` and ``,`` before a
non-digit, the final period, the clitic ``'s``). On the captions of the bundled templates and
the three matplotlib palettes it yields NLTK's tokens (``tests/text/test_text_tokenizer.py``
compares the two when NLTK is installed).
"""

from __future__ import annotations

import re

_START = (
    # starting quotes (NLTK's STARTING_QUOTES)
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    # punctuation (NLTK's PUNCTUATION, the rules that apply to captions)
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"\']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
)
_END = (
    # ending quotes and clitics (NLTK's ENDING_QUOTES), on the space-padded text
    (re.compile(r"\""), " '' "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
)


def word_tokenize(sentence: str) -> list[str]:
    """Tokens of one sentence."""
    text = sentence
    for pattern, repl in _START:
        text = pattern.sub(repl, text)
    text = " " + text + " "
    for pattern, repl in _END:
        text = pattern.sub(repl, text)
    return text.split()


def sentences(text: str) -> list[str]:
    """The sentences of a caption file: one per non-empty line."""
    return [line.strip() for line in text.splitlines() if line.strip()]
