"""The chat tasks' metrics and baselines on hand-made cases (gpt/chat/metrics.py)."""
import pytest

from gpt.chat import metrics


@pytest.mark.parametrize("a, b, distance", [("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
                                            ("flaw", "lawn", 2), ("vnfold", "unfold", 1), ("abc", "abc", 0),
                                            ("ab", "ba", 2)])
def test_levenshtein(a, b, distance):
    assert metrics.levenshtein(a, b) == metrics.levenshtein(b, a) == distance


def test_cer_is_distance_over_reference_length():
    assert metrics.cer("selfe", "self") == 0.25
    assert metrics.cer("self", "self") == 0.0
    assert metrics.cer("", "abcd") == 1.0
    assert metrics.cer("abcdefgh", "abcd") == 1.0  # can pass 1 when the hypothesis is longer
    with pytest.raises(ValueError, match="non-empty reference"):
        metrics.cer("a", "")


def test_corpus_cer_weights_by_reference_length():
    # distances 1 and 0 over 4 + 6 reference characters: 0.1, not the mean of 0.25 and 0
    assert metrics.corpus_cer(["selfe", "unfold"], ["self", "unfold"]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        metrics.corpus_cer(["a"], ["a", "b"])


def test_exact_match_ignores_surrounding_whitespace_only():
    assert metrics.exact_match("Hor.\n", "Hor.")
    assert not metrics.exact_match("Hor", "Hor.")
    assert not metrics.exact_match("hor.", "Hor.")


def test_most_frequent_speaker_ties_go_to_the_first_to_speak():
    assert metrics.most_frequent_speaker(["Ber.", "Hor.", "Mar.", "Hor."]) == "Hor."
    assert metrics.most_frequent_speaker(["Mar.", "Ber.", "Ber.", "Mar."]) == "Mar."
    assert metrics.most_frequent_speaker(["Fran."]) == "Fran."


def test_speakers_in_order_of_first_appearance():
    assert metrics.speakers_in_order(["Ber.", "Hor.", "Ber.", "Mar.", "Hor."]) == "Ber., Hor., Mar."
    assert metrics.speakers_in_order(["KING RICHARD.", "GAUNT."]) == "KING RICHARD., GAUNT."


def test_spelling_key_folds_case_u_v_i_j_and_drops_non_letters():
    assert metrics.spelling_key("Vnfold") == metrics.spelling_key("unfold") == "vnfold"
    assert metrics.spelling_key("Iohn's") == metrics.spelling_key("John's") == "iohns"
    assert metrics.spelling_key("a, b; c!") == "abc"
    assert metrics.spelling_key("Caf\u00e9") == "caf"  # letters outside a-z are dropped too


def test_words_keep_inner_apostrophes():
    assert metrics.words("Who's there? 'Tis vsurp'st, O!") == ["Who's", "there", "Tis", "vsurp'st", "O"]


def test_aligned_words_pair_equal_keys_and_same_length_replacements():
    pairs = metrics.aligned_words("Nay answer me: Stand & vnfold your selfe",
                                  "Nay, answer me: stand, and unfold yourself.")
    assert ("Stand", "stand") in pairs and ("vnfold", "unfold") in pairs and ("Nay", "Nay") in pairs
    assert not any(a in ("your", "selfe") for a, _ in pairs)  # "your selfe" -> "yourself": 2 words to 1
    assert metrics.aligned_words("Haue you had quiet Guard", "Have you had quiet guard")[0] == ("Haue", "Have")


def test_dictionary_learns_the_most_frequent_modern_word_and_copies_the_rest():
    pairs = [("Giue me the Crowne", "Give me the crown"), ("Giue it me", "Give it me"),
             ("Giue ore", "Gave o'er"), ("the Crowne is mine", "the Crown is mine"),
             ("the Crowne of Denmarke", "the crown of Denmark")]
    dictionary = metrics.learn_dictionary(pairs)
    assert dictionary["Giue"] == "Give"  # 2 of 3
    assert dictionary["Crowne"] == "crown"  # 2 of 3, case learned with the spelling
    assert dictionary["Denmarke"] == "Denmark"
    line = "Giue me thy Crowne, good Heauen!"
    assert metrics.apply_dictionary(dictionary, line) == "Give me thy crown, good Heauen!"  # Heauen unseen
    assert metrics.apply_dictionary({}, line) == line


def test_dictionary_ties_go_to_the_first_seen():
    assert metrics.learn_dictionary([("selfe", "self"), ("selfe", "selves")]) == {"selfe": "self"}
