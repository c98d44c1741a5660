"""The BraTS clinical tables: survival text, classes, and refusal of unusable tables."""

from __future__ import annotations

import pytest

from glioseg.radiomics.clinical import (
    parse_survival,
    read_grade_table,
    read_survival_table,
    survival_class,
)
from glioseg.radiomics.errors import RadiomicsError


@pytest.mark.parametrize(("text", "expected"), [
    ("412", (412.0, True)),
    (" 89.0 ", (89.0, True)),
    ("ALIVE (361 days later)", (361.0, False)),
    ("alive (12 days later)", (12.0, False)),
    ("ALIVE (1 day)", (1.0, False)),
    ("NA", None),
    ("", None),
])
def test_parse_survival(text, expected):
    assert parse_survival(text) == expected


@pytest.mark.parametrize("text", ["dead", "-5", "inf", "ALIVE", "ALIVE (soon)"])
def test_parse_survival_refuses_other_text(text):
    with pytest.raises(ValueError, match="survival"):
        parse_survival(text)


@pytest.mark.parametrize(("days", "cls"), [(0, "short"), (299.9, "short"), (300, "mid"), (450, "mid"),
                                            (450.1, "long"), (2000, "long")])
def test_brats_classes_at_300_and_450_days(days, cls):
    assert survival_class(days) == cls


def test_read_survival_table_parses_text_and_keeps_unknowns(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("BraTS18ID,Age,Survival,ResectionStatus\na,60.5,400,GTR\nb,50,ALIVE (361 days later),NA\n"
                    "c,40,NA,STR\n")
    table = read_survival_table(path)
    assert (table["a"].age, table["a"].days, table["a"].event, table["a"].resection) == (60.5, 400.0, True, "GTR")
    assert (table["b"].days, table["b"].event) == (361.0, False)
    assert table["c"].days is None


def test_a_table_without_the_survival_column_is_refused_naming_file_and_header(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("BraTS18ID,Age\na,60\n")
    with pytest.raises(RadiomicsError, match=r"clinical\.csv: clinical table lacks column\(s\) Survival .*header "
                                             r"BraTS18ID,Age,Survival"):
        read_survival_table(path)
    assert read_survival_table(path, need_survival=False)["a"].days is None  # prediction needs only the age


@pytest.mark.parametrize(("body", "match"), [
    ("a,old,400\n", "Age 'old'"),
    ("a,60,soon\n", "survival 'soon'"),
    ("a,60,400\na,61,500\n", "appears twice"),
])
def test_bad_cells_name_the_line_and_case(tmp_path, body, match):
    path = tmp_path / "s.csv"
    path.write_text("BraTS18ID,Age,Survival\n" + body)
    with pytest.raises(RadiomicsError, match=match):
        read_survival_table(path)


def test_grade_table(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("BraTS18ID,Grade\na,HGG\nb,lgg\n")
    assert read_grade_table(path) == {"a": "HGG", "b": "LGG"}
    path.write_text("BraTS18ID,Grade\na,GBM\n")
    with pytest.raises(RadiomicsError, match="not HGG or LGG"):
        read_grade_table(path)
    with pytest.raises(RadiomicsError, match="not found"):
        read_grade_table(tmp_path / "none.csv")


@pytest.mark.parametrize("reader", [read_survival_table, read_grade_table])
def test_a_row_with_more_cells_than_the_header_is_refused_naming_the_line(tmp_path, reader):
    path = tmp_path / "t.csv"
    path.write_text("BraTS18ID,Age,Survival,Grade\na,60,400,HGG\nb,50,1,000,HGG\n")  # unquoted "1,000"
    with pytest.raises(RadiomicsError, match=r"t\.csv: line 3: 1 cell\(s\) more than the header's 4; .*quote"):
        reader(path)
