"""Split files: deterministic, written atomically, reused, and checked against the datalist."""

from __future__ import annotations

import json
import random

import pytest

from monai_effseg.data import SplitFileError, create_split, exclude_cases, load_or_create_split


def _datalist(n: int, prefix: str = "case_") -> list[dict[str, str]]:
    return [{"image": f"/d/{prefix}{i:05d}/img.nii.gz", "label": "l", "case_id": f"{prefix}{i:05d}"} for i in range(n)]


def _ids(split: dict) -> dict[str, list[str]]:
    return {key: [item["case_id"] for item in items] for key, items in split.items()}


def test_split_is_deterministic_and_independent_of_input_order(tmp_path):
    items = _datalist(30)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    first = _ids(load_or_create_split(items, tmp_path / "a.json", val_fraction=0.2, seed=3))
    second = _ids(load_or_create_split(shuffled, tmp_path / "b.json", val_fraction=0.2, seed=3))
    assert first == second
    assert len(first["validation"]) == 6 and len(first["training"]) == 24
    assert set(first["training"]).isdisjoint(first["validation"])
    assert set(first["training"]) | set(first["validation"]) == {item["case_id"] for item in items}
    other_seed = _ids(load_or_create_split(items, tmp_path / "c.json", val_fraction=0.2, seed=4))
    assert other_seed["validation"] != first["validation"]


def test_split_file_is_written_and_reused(tmp_path):
    split_file = tmp_path / "out" / "split.json"
    created = load_or_create_split(_datalist(10), split_file, val_fraction=0.3, seed=0)
    stored = json.loads(split_file.read_text(encoding="utf-8"))
    assert stored["training"] == [item["case_id"] for item in created["training"]]
    assert stored["validation"] == [item["case_id"] for item in created["validation"]]
    assert stored["seed"] == 0 and stored["val_fraction"] == 0.3
    assert [p.name for p in split_file.parent.iterdir()] == ["split.json"]  # no temporary file left
    # Another fraction and seed: the stored split wins, and items come from the new datalist (new paths).
    moved = [dict(item, image=item["image"].replace("/d/", "/moved/")) for item in _datalist(12)]
    reused = load_or_create_split(moved, split_file, val_fraction=0.5, seed=9)
    assert _ids(reused) == {"training": stored["training"], "validation": stored["validation"]}
    assert reused["training"][0]["image"].startswith("/moved/")
    assert json.loads(split_file.read_text(encoding="utf-8")) == stored


def test_split_file_for_another_dataset_is_an_error(tmp_path):
    split_file = tmp_path / "split.json"
    load_or_create_split(_datalist(5), split_file)
    with pytest.raises(SplitFileError) as err:
        load_or_create_split(_datalist(5, prefix="volume-"), split_file)
    message = str(err.value)
    assert str(split_file) in message and "case_00000" in message and "Delete it" in message


def test_unreadable_split_file_is_an_error(tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text('{"training": [')
    with pytest.raises(SplitFileError, match="unreadable"):
        load_or_create_split(_datalist(3), split_file)


def test_exclude_by_id_and_by_number(tmp_path):
    items = _datalist(140)
    kept = exclude_cases(items, [15, 23, 37, 68, 125, 133])
    assert len(kept) == 134
    assert not {"case_00015", "case_00133"} & {item["case_id"] for item in kept}
    assert len(exclude_cases(items, ["case_00001", "7"])) == 138
    split = _ids(load_or_create_split(items, tmp_path / "s.json", exclude=[15, "case_00023"]))
    everything = split["training"] + split["validation"]
    assert len(everything) == 138 and "case_00015" not in everything and "case_00023" not in everything
    # Exclusions added later are applied to the stored split too.
    later = _ids(load_or_create_split(items, tmp_path / "s.json", exclude=[15, "case_00023", 42]))
    assert "case_00042" not in later["training"] + later["validation"]


def test_validation_size_bounds():
    assert create_split(["a"]) == {"training": ["a"], "validation": []}
    two = create_split(["a", "b"], val_fraction=0.01)
    assert len(two["validation"]) == 1 and len(two["training"]) == 1
    assert len(create_split([f"c{i}" for i in range(3)], val_fraction=0.9)["training"]) == 1
    with pytest.raises(ValueError):
        create_split(["a", "b"], val_fraction=1.0)
