"""Five Shakespeare tasks as chat conversations: training mixture, validation and held-out evaluation sets.

    build_tasks("tasks", max_chars=512, seed=1337)      # or: python -m gpt.chat.tasks --out_dir=tasks

writes, from the plays of gpt.chat.plays (modern edition; the First Folio for translation):

    train.jsonl          {"task", "messages"}: the shuffled mixture, from every play but HELD_OUT
    val.jsonl            the same kind of lines, val_fraction of each task's examples, kept out of train
    eval/<task>.jsonl    from the HELD_OUT plays only: {"task", "messages" (without the final assistant
                         turn), "reference" (that turn), ...what the metrics and baselines need}
    translation_dictionary.json   the word-substitution baseline, learned from train's translation pairs
    manifest.json        the parameters, examples per task and split, and the baselines' scores

The user turns, exactly:

    translation    Modernize: <a First Folio line>                   -> the modern edition's line
    qa             Who says "<3-8 words>"?\\n<passage>                -> the speaker, as the play writes it ("Hor.")
    summarization  Who speaks in this scene?\\n<passage>              -> the speakers in order of first
                                                                        appearance, comma-separated ("Ber., Hor.")
    dialogue       system "You are B talking with A." (one period after "Hor."), then user turns of A's
                   speeches, assistant turns of B's replies: a stretch of one scene where only A and B
                   speak, alternately
    generation     Continue: <a line of a speech>                    -> the speech's next lines

A passage is 3-6 consecutive speeches of one scene in the modern edition's layout
(plays.plain_layout: the speaker's line, the speech, a blank line between speeches); a QA quote
is words of one line that occur exactly once in the passage. Every conversation's messages
together hold at most max_chars characters.

Translation pairs: the speech lines of each play's Folio and modern editions are aligned by
difflib over lines compared by a coarse spelling key (metrics.spelling_key without e's and
doubled letters, y as i: "selfe" and "self" meet); a pair is kept when both lines have 10-60
characters, their spelling keys are at least 0.85 similar (difflib ratio), and no word hangs
off either end of the line (a line break the two editions put in different places). Equal
runs and replaced runs of the same length pair up; other runs are dropped.

Eval extras: translation "source" (the Folio line: the identity baseline) and "dictionary" (the
word-substitution baseline's output); qa and summarization "speakers" (the passage's speakers in
order; qa also "most_frequent_speaker", its baseline); dialogue and generation "plain" and
"reply_spans": the same text in the plays' own layout, and [start, end) of each assistant turn's
content in it (the i-th span is the i-th assistant turn of messages + [reference]), so a
pre-trained model's loss on exactly those characters can be set beside the chat model's.

What the sdist gives (`python -m gpt.chat.tasks --out_dir=tasks --eval_limit=0`, 2026-12-07): from
the 34 training plays, 65,495 translation pairs (32 plays with a Folio text), 5,614 qa, 5,701
summarization, 2,310 dialogue and 10,022 generation examples (the default counts take 20,000,
all, 5,000, all and 10,000 of them); from the held-out plays 6,415 translation pairs, 475 qa,
476 summarization, 200 dialogue and 898 generation examples. Baselines on all of those:
character error rate 0.0976 copying the Folio line, 0.0583 with the word-substitution dictionary
(15,151 words, learned from the 19,000 training pairs); exact match 0.501 answering QA with the
passage's most frequent speaker. The build takes 9.5 s of CPU (AMD EPYC, AVX-512), most of it
aligning lines.

Left out: the poems, held-out splits by scene, paraphrased prompts, tasks across plays.
"""
import dataclasses
import difflib
import functools
import json
import os
import random
import re
import time

from ..cli import run_main
from ..config import option, parse
from ..data import DataError
from ..safetensors import write_file, write_json
from . import metrics
from .plays import HELD_OUT, load_plays, plain_layout

TASKS = ("translation", "qa", "summarization", "dialogue", "generation")
DEFAULT_COUNTS = {"translation": 20000, "qa": 10000, "summarization": 5000, "dialogue": 5000, "generation": 10000}
SIMILARITY, LINE_CHARS = 0.85, (10, 60)  # translation pairs: spelling-key ratio, line lengths
PASSAGE_SPEECHES = (3, 6)  # qa and summarization
QUOTE_WORDS = (3, 8)
CONTINUE_LINES, CONTINUE_CHARS = (2, 4), 240  # generation: lines after the opening one, their characters
MIN_EXCHANGES = 2  # dialogue: user/assistant pairs per conversation


# ---- translation ------------------------------------------------------------------------------
def coarse_key(line):
    """The spelling key without e's and doubled letters, y as i: what anchors a Folio line to its modern one."""
    return re.sub(r"(.)\1+", r"\1", metrics.spelling_key(line).replace("e", "").replace("y", "i"))


def align_lines(folio, modern):
    """[(i, j)]: folio[i] and modern[j] say the same line (see the module docstring), in order."""
    matcher = difflib.SequenceMatcher(None, [coarse_key(a) for a in folio], [coarse_key(b) for b in modern],
                                      autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            pairs += [(i, j) for i, j in zip(range(i1, i2), range(j1, j2)) if same_line(folio[i], modern[j])]
    return pairs


def same_line(folio, modern):
    """Whether two lines are one line in two spellings: lengths, spelling similarity, no hanging word."""
    low, high = LINE_CHARS
    if not (low <= len(folio) <= high and low <= len(modern) <= high):
        return False
    similar = difflib.SequenceMatcher(None, metrics.spelling_key(folio), metrics.spelling_key(modern), autojunk=False)
    if similar.quick_ratio() < SIMILARITY or similar.ratio() < SIMILARITY:
        return False
    words = difflib.SequenceMatcher(None, [metrics.spelling_key(w) for w in metrics.words(folio)],
                                    [metrics.spelling_key(w) for w in metrics.words(modern)], autojunk=False)
    ops = words.get_opcodes()
    return bool(ops) and ops[0][0] in ("equal", "replace") and ops[-1][0] in ("equal", "replace")


@functools.lru_cache(maxsize=64)
def translation_pairs(play):
    """[(Folio line, modern line)] of one play, aligned; [] for a play without a Folio text."""
    folio = [line for speech in play.folio for line in speech.lines]
    modern = [line for speech in play.modern for line in speech.lines]
    return [(folio[i], modern[j]) for i, j in align_lines(folio, modern)]


def translation_examples(play, rng, max_chars):
    """Translation records of one play: Modernize: <Folio line> -> the modern line."""
    return [{"task": "translation", "messages": [user(f"Modernize: {a}")], "reference": b, "source": a}
            for a, b in dict.fromkeys(translation_pairs(play))]


# ---- passages: qa and summarization -----------------------------------------------------------
def passages(speeches, rng, max_chars, extra_chars):
    """Non-overlapping runs of 3-6 consecutive speeches of one scene, each at most max_chars characters
    as a passage plus extra_chars(run) (the prompt and the reply); each run's length is drawn from `rng`."""
    runs, i = [], 0
    while i + PASSAGE_SPEECHES[0] <= len(speeches):
        n = rng.randint(*PASSAGE_SPEECHES)
        run = [s for s in speeches[i:i + n] if s.scene == speeches[i].scene]
        while len(run) >= PASSAGE_SPEECHES[0] and extra_chars(run) + len(plain_layout(run)[0]) > max_chars:
            run.pop()
        if len(run) >= PASSAGE_SPEECHES[0]:
            runs.append(run)
            i += len(run)
        else:
            i += 1
    return runs


def pick_quote(run, passage, rng, tries=5):
    """(quote, speaker): 3-8 words of one line of `run` that occur exactly once in `passage`, drawn
    up to `tries` times; (None, None) if no draw found one."""
    for _ in range(tries):
        quote, speaker = draw_quote(run, passage, rng)
        if quote is not None:
            return quote, speaker
    return None, None


def draw_quote(run, passage, rng):
    """One draw of pick_quote: a random line of a random speech, a random run of its words."""
    speech = rng.choice(run)
    line = rng.choice(speech.lines)
    words = line.split()
    if len(words) < QUOTE_WORDS[0]:
        return None, None
    n = rng.randint(QUOTE_WORDS[0], min(QUOTE_WORDS[1], len(words)))
    start = rng.randrange(len(words) - n + 1)
    quote = " ".join(words[start:start + n]).rstrip(",.;:!?-").lstrip("-")
    if len(quote.split()) < QUOTE_WORDS[0] or '"' in quote or passage.count(quote) != 1:
        return None, None
    return quote, speech.speaker


def qa_examples(play, rng, max_chars):
    """QA records of one play: Who says "<quote>"? + passage -> the quote's speaker."""
    records = []
    allowance = len('Who says ""?\n') + 40  # the prompt with a quote of 40 characters
    for run in passages(play.modern, rng, max_chars, lambda run: allowance + max(len(s.speaker) for s in run)):
        passage = plain_layout(run)[0]
        quote, speaker = pick_quote(run, passage, rng)
        if quote is not None:
            speakers = [s.speaker for s in run]
            records.append({"task": "qa", "messages": [user(f'Who says "{quote}"?\n{passage}')],
                            "reference": speaker, "speakers": speakers,
                            "most_frequent_speaker": metrics.most_frequent_speaker(speakers)})
    return records


def summarization_examples(play, rng, max_chars):
    """Summarization records of one play: Who speaks in this scene? + passage -> the speakers in order."""
    prompt = "Who speaks in this scene?\n"
    records = []
    def extra_chars(run):
        return len(prompt) + len(metrics.speakers_in_order([s.speaker for s in run]))

    for run in passages(play.modern, rng, max_chars, extra_chars):
        speakers = [s.speaker for s in run]
        records.append({"task": "summarization", "messages": [user(prompt + plain_layout(run)[0])],
                        "reference": metrics.speakers_in_order(speakers), "speakers": speakers})
    return records


# ---- dialogue ---------------------------------------------------------------------------------
def alternating_runs(speeches):
    """Maximal runs of consecutive speeches of one scene in which exactly two speakers take turns."""
    runs, run = [], []
    for speech in speeches:
        follows = bool(run) and speech.scene == run[-1].scene and speech.speaker != run[-1].speaker
        if follows and (len(run) < 2 or speech.speaker == run[-2].speaker):
            run.append(speech)
            continue
        if len(run) >= 2:
            runs.append(run)
        run = [run[-1], speech] if follows else [speech]
    return runs + [run] if len(run) >= 2 else runs


def dialogue_examples(play, rng, max_chars):
    """Dialogue records of one play: each alternating run cut into conversations of at least
    MIN_EXCHANGES user/assistant pairs and at most max_chars characters."""
    records = []
    for run in alternating_runs(play.modern):
        k = 0
        while k + 2 * MIN_EXCHANGES <= len(run):
            chunk = run[k:k + 2 * MIN_EXCHANGES]
            while len(chunk) + 2 <= len(run) - k and dialogue_chars(run[k:k + len(chunk) + 2]) <= max_chars:
                chunk = run[k:k + len(chunk) + 2]
            if dialogue_chars(chunk) <= max_chars:
                records.append(dialogue_record(chunk))
                k += len(chunk)
            else:
                k += 2
    return records


def dialogue_messages(chunk):
    """The conversation of an even-length chunk: system names the two, then user/assistant turns."""
    other = chunk[0].speaker if chunk[0].speaker.endswith(".") else chunk[0].speaker + "."
    system = {"role": "system", "content": f"You are {chunk[1].speaker} talking with {other}"}
    turns = [{"role": ("user", "assistant")[i % 2], "content": "\n".join(s.lines)} for i, s in enumerate(chunk)]
    return [system] + turns


def dialogue_chars(chunk):
    """Characters in all the messages of dialogue_messages(chunk)."""
    return sum(len(m["content"]) for m in dialogue_messages(chunk))


def dialogue_record(chunk):
    """The eval-style record of a chunk: the conversation less its last reply, which is the reference."""
    messages = dialogue_messages(chunk)
    plain, spans = plain_layout(chunk)
    return {"task": "dialogue", "messages": messages[:-1], "reference": messages[-1]["content"],
            "plain": plain, "reply_spans": [list(span) for span in spans[1::2]]}


# ---- generation -------------------------------------------------------------------------------
def generation_examples(play, rng, max_chars):
    """Generation records of one play: Continue: <a line> -> the next 2-4 lines of the same speech
    (at most CONTINUE_CHARS characters); one per speech that has them."""
    records = []
    for speech in play.modern:
        if len(speech.lines) < 1 + CONTINUE_LINES[0]:
            continue
        k = rng.randrange(len(speech.lines) - CONTINUE_LINES[0])
        following = list(speech.lines[k + 1:k + 1 + CONTINUE_LINES[1]])
        while len(following) > CONTINUE_LINES[0] and len("\n".join(following)) > CONTINUE_CHARS:
            following.pop()
        opening, continuation = speech.lines[k], "\n".join(following)
        if len(continuation) <= CONTINUE_CHARS:
            plain = f"{opening}\n{continuation}"
            records.append({"task": "generation", "messages": [user(f"Continue: {opening}")],
                            "reference": continuation, "plain": plain,
                            "reply_spans": [[len(opening) + 1, len(plain)]]})
    return records


BUILDERS = {"translation": translation_examples, "qa": qa_examples, "summarization": summarization_examples,
            "dialogue": dialogue_examples, "generation": generation_examples}


# ---- the whole set ----------------------------------------------------------------------------
def user(content):
    """A user message."""
    return {"role": "user", "content": content}


def conversation(record):
    """The training line of a record: its task and messages with the reference as the last assistant turn."""
    return {"task": record["task"],
            "messages": record["messages"] + [{"role": "assistant", "content": record["reference"]}]}


def task_records(plays, task, seed, max_chars):
    """Every record of `task` from `plays` whose conversation fits max_chars, in play order; each
    play draws from its own seeded rng."""
    return [r for play in plays for r in BUILDERS[task](play, random.Random(f"{seed}:{task}:{play.stem}"), max_chars)
            if sum(len(m["content"]) for m in r["messages"]) + len(r["reference"]) <= max_chars]


def build_tasks(out_dir, max_chars=512, seed=1337, counts=None, val_fraction=0.05, eval_limit=500, sdist=None):
    """Write the task files into out_dir (see the module docstring); returns the manifest dict.

    counts: {task: training examples (train + val)}, DEFAULT_COUNTS for tasks not given; a task
    with fewer examples gives all it has, 0 leaves it out. eval_limit: examples per task in each
    eval file (None: all). The same arguments write the same files; each task's draws have their
    own seeded generator, so changing one task's count changes no other task's examples.
    """
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    unknown = sorted(set(counts) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in counts; the tasks are {', '.join(TASKS)}")
    if max_chars < 100:
        raise ValueError(f"max_chars={max_chars} is too small for a passage of 3 speeches; use at least 100")
    try:
        os.makedirs(os.path.join(out_dir, "eval"), exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {out_dir}/eval: {e.strerror}; choose another --out_dir") from None
    started = time.perf_counter()
    plays = load_plays(sdist)
    training = [p for stem, p in plays.items() if stem not in HELD_OUT]
    held_out = [plays[stem] for stem in HELD_OUT]
    splits, available = {"train": [], "val": []}, {}
    for task in TASKS:
        records = task_records(training, task, seed, max_chars)
        available[task] = len(records)
        random.Random(f"{seed}:{task}:train").shuffle(records)
        chosen = records[:counts[task]]
        n_val = round(len(chosen) * val_fraction)
        splits["val"] += chosen[:n_val]
        splits["train"] += chosen[n_val:]
    dictionary = metrics.learn_dictionary([(r["source"], r["reference"]) for r in splits["train"]
                                           if r["task"] == "translation"])
    evals = {}
    for task in TASKS:
        records = task_records(held_out, task, seed, max_chars)
        random.Random(f"{seed}:{task}:eval").shuffle(records)
        evals[task] = records[:eval_limit]
        for r in evals[task] if task == "translation" else ():
            r["dictionary"] = metrics.apply_dictionary(dictionary, r["source"])
    random.Random(f"{seed}:mixture").shuffle(splits["train"])
    for split, records in splits.items():
        write_jsonl(os.path.join(out_dir, f"{split}.jsonl"), [conversation(r) for r in records])
    for task, records in evals.items():
        write_jsonl(os.path.join(out_dir, "eval", f"{task}.jsonl"), records)
    write_json(os.path.join(out_dir, "translation_dictionary.json"), dictionary, indent=2)
    manifest = {"max_chars": max_chars, "seed": seed, "counts": counts, "val_fraction": val_fraction,
                "eval_limit": eval_limit, "held_out": list(HELD_OUT), "available_train": available,
                "examples": {split: {t: sum(r["task"] == t for r in records) for t in TASKS}
                             for split, records in [*splits.items(), ("eval", sum(evals.values(), []))]},
                "baselines": baselines(evals), "dictionary_words": len(dictionary),
                "build_seconds": round(time.perf_counter() - started, 1)}
    write_json(os.path.join(out_dir, "manifest.json"), manifest, indent=2)
    return manifest


def baselines(evals):
    """The baselines' scores on the eval records: identity and dictionary CER, QA most-frequent-speaker accuracy."""
    scores = {}
    if evals["translation"]:
        refs = [r["reference"] for r in evals["translation"]]
        scores["translation_identity_cer"] = metrics.corpus_cer([r["source"] for r in evals["translation"]], refs)
        scores["translation_dictionary_cer"] = metrics.corpus_cer([r["dictionary"] for r in evals["translation"]],
                                                                  refs)
    if evals["qa"]:
        scores["qa_most_frequent_speaker_exact_match"] = (
            sum(metrics.exact_match(r["most_frequent_speaker"], r["reference"]) for r in evals["qa"])
            / len(evals["qa"]))
    return {k: round(v, 4) for k, v in scores.items()}


def write_jsonl(path, records):
    """One JSON object per line, written atomically."""
    write_file(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))


# ---- command line -----------------------------------------------------------------------------
def count_option(task):
    """The option giving `task`'s number of examples (this command's and chat_pipeline.py's)."""
    return option(DEFAULT_COUNTS[task], f"{task} examples (train + val; fewer if the plays give fewer)",
                  valid="[0, inf)")


def counts_of(cfg):
    """{task: examples} from a config holding each task's count_option."""
    return {task: getattr(cfg, task) for task in TASKS}


@dataclasses.dataclass
class TasksConfig:
    out_dir: str = option("", "folder to write train.jsonl, val.jsonl, eval/ and manifest.json into")
    max_chars: int = option(512, "most characters in one conversation's messages", valid="[100, inf)")
    seed: int = option(1337, "seed of every random choice (the same seed writes the same files)")
    translation: int = count_option("translation")
    qa: int = count_option("qa")
    summarization: int = count_option("summarization")
    dialogue: int = count_option("dialogue")
    generation: int = count_option("generation")
    val_fraction: float = option(0.05, "part of each task's examples kept for val.jsonl", valid="[0, 1)")
    eval_limit: int = option(500, "most examples per task in each eval file (0: all)", valid="[0, inf)")


def main(argv):
    cfg = parse(TasksConfig, argv, "-m gpt.chat.tasks")
    if not cfg.out_dir:
        raise ValueError("give the folder to write into with --out_dir=DIR")
    manifest = build_tasks(cfg.out_dir, cfg.max_chars, cfg.seed, counts_of(cfg),
                           cfg.val_fraction, cfg.eval_limit or None)
    for split, per_task in manifest["examples"].items():
        print(f"{split:5s} " + "  ".join(f"{t} {n}" for t, n in per_task.items()))
    print("baselines: " + ", ".join(f"{k} {v}" for k, v in manifest["baselines"].items()))
    print(f"wrote {cfg.out_dir} in {manifest['build_seconds']} s")


if __name__ == "__main__":
    run_main(main)
