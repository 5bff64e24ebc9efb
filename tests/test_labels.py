"""Class names become words: Diving48 codes, FineGym events, Toyota activities, underscore names."""

from __future__ import annotations

import re

import pytest

from pevl.data.labels import clean_class_name, diving48_label_text, parse_finegym_name, toyota_label_text


def test_diving48_example_from_the_paper_labels():
    assert diving48_label_text("Back+15som+05Twis+FREE") == "back takeoff, 1.5 somersaults, 0.5 twist, free position"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("Forward+1som+NoTwis+PIKE", "forward takeoff, 1 somersault, no twist, pike position"),
        ("Inward+Dive+NoTwis+TUCK", "inward takeoff, dive, no twist, tuck position"),
        ("Forward+Dive+NoTwis+STR", "forward takeoff, dive, no twist, straight position"),
        ("Forward+25som+3Twis+PIKE", "forward takeoff, 2.5 somersaults, 3 twists, pike position"),
        ("Reverse+15som+35Twis+FREE", "reverse takeoff, 1.5 somersaults, 3.5 twists, free position"),
    ],
)
def test_diving48_codes_expand_to_words(code, text):
    assert diving48_label_text(code) == text


def test_every_real_diving48_code_expands_sensibly(shared_data):
    codes = (shared_data / "labels" / "diving48" / "label_map_diving48.txt").read_text().split()
    texts = [diving48_label_text(code) for code in codes]
    assert len(codes) == 48 and len(set(texts)) == 48
    for text in texts:
        takeoff, som, twist, position = text.split(", ")
        assert re.fullmatch(r"(back|forward|inward|reverse) takeoff", takeoff)
        assert re.fullmatch(r"dive|\d(\.5)? somersaults?", som)
        assert re.fullmatch(r"no twist|\d(\.5)? twists?", twist)
        assert re.fullmatch(r"(free|pike|tuck|straight) position", position)


def test_finegym_prefix_becomes_the_coarse_type():
    name = "(VT) round-off, flic-flac on, stretched salto backward with 2 turn off"
    assert parse_finegym_name(name) == ("vault", "round-off, flic-flac on, stretched salto backward with 2 turn off")
    assert parse_finegym_name("(FX) stag jump      ") == ("floor exercise", "stag jump")
    assert parse_finegym_name("no prefix here") == (None, "no prefix here")


def test_real_gym99_names_all_have_a_known_event(shared_data):
    names = (shared_data / "labels" / "finegym" / "label_map_gym99.txt").read_text().splitlines()
    parsed = [parse_finegym_name(n) for n in names if n.strip()]
    assert len(parsed) == 99
    events = [coarse for coarse, _ in parsed]
    assert {e: events.count(e) for e in set(events)} == {
        "vault": 6,
        "floor exercise": 35,
        "balance beam": 33,
        "uneven bars": 25,
    }
    assert not any(text.startswith("(") and text[3:4] == ")" for _, text in parsed)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Cook.Cleandishes", "cook: clean dishes"),
        ("Maketea.Insertteabag", "make tea: insert tea bag"),
        ("Eat.Attable", "eat: at table"),
        ("WatchTV", "watch TV"),
        ("Getup", "get up"),
        ("Walk", "walk"),
        ("Usetelephone", "use telephone"),
    ],
)
def test_toyota_activities_become_words(name, text):
    assert toyota_label_text(name) == text


def test_every_real_toyota_class_is_split_into_known_words(shared_data):
    text = (shared_data / "labels" / "toyota_smarthome" / "official_2sAGCN_class_maps_and_subjects.txt").read_text()
    names = set(re.findall(r"'([\w.]+)'", text))
    assert len(names) == 31
    for name in names:
        words = toyota_label_text(name).replace(":", "").split()
        # Run-together names are split: no word is longer than the longest vocabulary word ("telephone").
        assert all(len(w) <= 9 for w in words), name


def test_underscore_names_are_cleaned():
    assert clean_class_name("add_new_car_tire") == "add new car tire"
    assert clean_class_name("  eat meal/snack ") == "eat meal/snack"
