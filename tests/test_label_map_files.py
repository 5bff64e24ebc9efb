"""Label maps written as Python source: the dict form is read, anything else Python-like is an error, never names."""

from __future__ import annotations

import re

import pytest

from pevl.data.datasets.lists import read_class_names, read_label_map
from pevl.data.labels import python_label_map
from pevl.errors import PevlError, PevlWarning


def test_the_toyota_subjects_and_class_maps_file_is_not_a_label_map(shared_data):
    path = shared_data / "labels" / "toyota_smarthome" / "official_2sAGCN_class_maps_and_subjects.txt"
    with pytest.raises(PevlError) as err:
        read_label_map(path)
    message = str(err.value)
    assert str(path) in message and "not a label map" in message and "\n" not in message
    assert "training_subjects" in message and "action_classes, action_cv" in message


@pytest.mark.parametrize(
    "text",
    [
        "{'walk': 1, 'sit down': 0, 'Cook.Cut': 2}",
        "action_classes = {\n'walk': 1,\n'sit down': 0, 'Cook.Cut': 2\n}\n",
        "{1: 'walk', 0: 'sit down', 2: 'Cook.Cut'}",
    ],
)
def test_a_python_dict_is_read_in_id_order(tmp_path, text):
    path = tmp_path / "map.txt"
    path.write_text(text)
    label_map = read_label_map(path)
    assert label_map.names == ("sit down", "walk", "Cook.Cut") and label_map.ids == (0, 1, 2)
    assert read_class_names(path) == ["sit down", "walk", "Cook.Cut"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("classes = ['a', 'b']\n", "1 Python assignments (classes)"),  # a list is not a name -> id map
        ("a = {'x': 0}\nb = {'y': 0}\n", "its class maps (a, b)"),
        ("{'x': 0, 'y': 0}", "1 Python assignments"),  # duplicate ids
        ("x = {\n'a': 0,\n", "does not parse"),
        ("import os\nx = 1\n", "Python statements"),
        ("{'a': __import__('os').getcwd()}", "1 Python assignments"),  # parsed, never run
    ],
)
def test_other_python_like_files_are_errors(tmp_path, text, problem):
    path = tmp_path / "map.txt"
    path.write_text(text)
    with pytest.raises(PevlError, match="not a label map") as err:
        read_label_map(path)
    assert problem in str(err.value) and str(path) in str(err.value)


def test_plain_and_json_maps_are_left_to_their_readers(tmp_path):
    assert python_label_map("x", "walk\nsit down\n") is None
    assert python_label_map("x", '{"walk": 0, "sit": 1}') is None  # JSON: read as JSON
    assert python_label_map("x", "1: walk\n2: sit = down\n") is None  # "sit = down" is a name, not an assignment
    path = tmp_path / "names.txt"
    path.write_text("x = y\n")  # a class named with an equals sign alone is still Python-like: refused
    with pytest.raises(PevlError):
        read_label_map(path)


# ---- a class named twice: two identical texts would split one probability -------------------------------------------


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("names.txt", "walk\n\nsit down\nrun\nWalk\n", "lines 1 and 5 both name 'walk' and 'Walk'"),
        ("ids.txt", "3: walk\n1: sit  down\n7: sit_down\n", "lines 2 and 3 both name 'sit  down' and 'sit_down'"),
        ("classInd.txt", "1 Walk\n2 Run\n3 Walk\n", "lines 1 and 3 both name 'Walk'"),
        ("map.json", '["walk", "run", "walk"]', "classes 1 and 3 both name 'walk'"),
        ("map.json", '{"walk": 2, "run": 0, "Walk ": 1}', "classes 2 and 3 both name 'Walk ' and 'walk'"),
        ("map.pbtxt", 'item { name: "a" id: 1 }\nitem { name: "a" id: 2 }\n', "classes 1 and 2 both name 'a'"),
        ("gym.txt", "Clabel: 0; set: 1; Glabel: 1; (BB) salto\nClabel: 1; set: 2; Glabel: 5; (BB) salto\n",
         "lines 1 and 2 both name '(BB) salto'"),
    ],
)  # fmt: skip
def test_a_class_named_twice_is_refused_naming_both_lines(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PevlError) as err:
        read_label_map(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}: two identical texts") and "\n" not in message
    with pytest.raises(PevlError, match="lines|classes"):
        read_class_names(path)
    with pytest.warns(PevlWarning, match=re.escape(f"{path}: {where}") + ".*cannot tell them apart") as record:
        warned = read_label_map(path, duplicates="warn")
    assert len(record) == 1 and read_label_map(path, duplicates="allow") == warned


def test_names_that_differ_as_text_pass(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("walk\nwalking\nsit down\nsit-down\n")
    assert read_class_names(path) == ["walk", "walking", "sit down", "sit-down"]


def test_an_unknown_duplicates_mode_is_refused(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("walk\nrun\n")
    with pytest.raises(PevlError, match="duplicates='ignore'"):
        read_label_map(path, duplicates="ignore")


def test_the_official_label_maps_and_their_one_repeated_name(shared_data):
    """Gym99's official names give a flight element and a dismount one name: FineGym warns; the others are unique."""
    import warnings

    from pevl.data.datasets.finegym import finegym_classes

    labels = shared_data / "labels"
    for path in ("diving48/label_map_diving48.txt", "kinetics400/label_map_k400.txt",
                 "ntu/skeleton_label_map_ntu60.txt", "ntu/skeleton_label_map_ntu120.txt"):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(read_class_names(labels / path)) in (48, 400, 60, 120)
    gym99 = labels / "finegym" / "label_map_gym99.txt"
    with pytest.raises(PevlError, match="lines 59 and 71 both name '\\(BB\\) salto backward tucked'"):
        read_class_names(gym99)
    with pytest.warns(PevlWarning, match="lines 59 and 71 both name") as record:
        texts, coarse = finegym_classes(gym99)
    assert len(record) == 1 and len(texts) == 99 and texts[58] == texts[70] and coarse[58] == "balance beam"


def test_class_folders_that_are_one_class_text_are_refused(tmp_path):
    from pevl.data.datasets.generic import scan_class_folders

    for name in ("Air_drumming", "air drumming", "archery"):
        (tmp_path / name).mkdir()
    with pytest.raises(PevlError) as err:
        scan_class_folders(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}: class folders 'Air_drumming' and 'air drumming' name one class")
    (tmp_path / "air drumming").rmdir()
    assert scan_class_folders(tmp_path) == (["Air_drumming", "archery"], [])
