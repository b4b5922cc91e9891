"""Scores for the Shakespeare chat tasks, and the baselines a model has to beat.

    cer(hyp, ref)                   character error rate: Levenshtein distance / len(ref)
    corpus_cer(hyps, refs)          the same over a set: total distance / total reference length
    exact_match(hyp, ref)           the same string, surrounding whitespace aside
    most_frequent_speaker(speakers) the QA baseline: who speaks most in the passage (ties: the first to speak)
    speakers_in_order(speakers)     the summarization answer: "Ber., Hor., Mar."
    learn_dictionary(pairs)         the translation baseline, classic spelling normalisation: for each
    apply_dictionary(d, line)       Folio word, the modern word it was most often aligned with; words
                                    never seen are copied

Words are aligned by difflib over the two lines' word sequences, compared by spelling_key
(letters only, case folded, u/v and i/j folded: "vnfold" and "unfold" are one key); equal keys
pair up, and so do the words of a replaced run when both sides have the same number of words
("selfe" -> "self"). Runs of different lengths ("your selfe" -> "yourself") teach nothing.

Left out: word error rate, BLEU, normalising punctuation before scoring, learned (statistical or
neural) spelling models.
"""
import difflib
import re
from collections import Counter

_KEY = {c: None for c in range(128) if not chr(c).islower()} | {ord("u"): "v", ord("j"): "i"}  # spelling_key
_WORD = re.compile(r"([A-Za-z]+(?:'[A-Za-z]+)*)")  # a word, with inner apostrophes ("vsurp'st")


def levenshtein(a, b):
    """The fewest single-character insertions, deletions and substitutions turning `a` into `b`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(hyp, ref):
    """Character error rate of `hyp` against a non-empty `ref`: levenshtein(hyp, ref) / len(ref)."""
    if not ref:
        raise ValueError("cer needs a non-empty reference")
    return levenshtein(hyp, ref) / len(ref)


def corpus_cer(hyps, refs):
    """The character error rate of a set: sum of distances / sum of reference lengths."""
    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"corpus_cer needs as many hypotheses as references (got {len(hyps)} and {len(refs)}), "
                         "at least one")
    return sum(levenshtein(h, r) for h, r in zip(hyps, refs)) / sum(len(r) for r in refs)


def exact_match(hyp, ref):
    """Whether `hyp` is `ref`, ignoring whitespace at either end (a generated reply may end in a newline)."""
    return hyp.strip() == ref.strip()


def most_frequent_speaker(speakers):
    """The name that occurs most often in `speakers` (in speaking order); ties go to the first to speak."""
    counts = Counter(speakers)  # insertion order is speaking order, and max keeps the first of equals
    return max(counts, key=counts.get)


def speakers_in_order(speakers):
    """The distinct names of `speakers` in order of first appearance, comma-separated: "Ber., Hor."."""
    return ", ".join(dict.fromkeys(speakers))


def spelling_key(text):
    """Letters only, lower case, u->v and j->i: what a Folio and a modern spelling often share."""
    key = text.lower().translate(_KEY)
    return key if key.isascii() else re.sub(r"[^a-z]", "", key)


def words(line):
    """The words of `line`, in order (punctuation and spaces left out)."""
    return _WORD.findall(line)


def aligned_words(folio, modern):
    """(folio word, modern word) pairs of one line pair, aligned as the module docstring says."""
    a, b = words(folio), words(modern)
    matcher = difflib.SequenceMatcher(None, [spelling_key(w) for w in a], [spelling_key(w) for w in b],
                                      autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            pairs += zip(a[i1:i2], b[j1:j2])
    return pairs


def learn_dictionary(pairs):
    """{Folio word: its most frequent modern word} from (folio line, modern line) pairs.

    Ties go to the modern word seen first. Words are case-sensitive ("Heauen" and "heauen" are
    two entries), so capitalisation is learned along with spelling.
    """
    counts = {}
    for folio, modern in pairs:
        for a, b in aligned_words(folio, modern):
            counts.setdefault(a, Counter())[b] += 1
    return {a: c.most_common(1)[0][0] for a, c in counts.items()}


def apply_dictionary(dictionary, line):
    """`line` with each word replaced by its dictionary entry; unknown words, spaces, punctuation copied."""
    pieces = _WORD.split(line)  # odd indices are words
    return "".join(dictionary.get(p, p) if i % 2 else p for i, p in enumerate(pieces))
