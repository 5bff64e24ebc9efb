"""Label maps written as Python source: the dict form is read, anything else Python-like is an error, never names."""

from __future__ import annotations

import pytest

from pevl.data.datasets.lists import read_class_names, read_label_map
from pevl.data.labels import python_label_map
from pevl.errors import PevlError


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
