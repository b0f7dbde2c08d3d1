"""Recipe parsing: the shipped recipes load, and every malformed recipe fails with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.recipe import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "train" / "recipes"

VALID = """
name = "tiny"
labels = ["A", "B"]
seed = 1
[split]
val_fraction = 0.2
test_fraction = 0.2
[[sources]]
name = "s"
roots = ["data"]
kind = "crops"
[sources.labels]
x = "A"
y = "B"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["four_class.toml", "ferplus_pretrain.toml"])
def test_shipped_recipes_parse(name: str) -> None:
    recipe = load_recipe(RECIPES / name)
    assert recipe.sources and len(recipe.labels) >= 4


def test_four_class_recipe_maps_onto_product_labels() -> None:
    recipe = load_recipe(RECIPES / "four_class.toml")
    assert recipe.labels == ("Angry", "Neutral", "Engaged", "Bored")
    sources = {s.name: s for s in recipe.sources}
    # only a source holding all four labels trains: a one- or two-label source would stand for its labels
    trained = [s for s in recipe.sources if s.role == "train"]
    assert [s.name for s in trained] == ["affectnet4"] and set(trained[0].label_map.values()) == set(recipe.labels)
    assert sources["student_engagement"].kind == "frames" and sources["student_engagement"].role == "eval"
    assert "Looking Away" not in sources["student_engagement"].label_map
    assert sources["daisee"].group == "folder" and sources["daisee"].label_map == {"*": "Engaged"}
    assert sources["fer2013_test"].votes == "fer2013/ferplus_votes.csv"


def test_ferplus_recipe_takes_all_eight_emotions_from_the_votes() -> None:
    recipe = load_recipe(RECIPES / "ferplus_pretrain.toml")
    (source,) = recipe.sources
    assert source.votes and set(source.label_map) == set(recipe.labels) and len(recipe.labels) == 8


def test_valid_minimal_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, VALID))
    assert recipe.labels == ("A", "B") and recipe.sources[0].label_map == {"x": "A", "y": "B"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('y = "B"', 'y = "C"'), "unknown label 'C'"),
        (('kind = "crops"', 'kind = "video"'), "kind 'video' is not allowed"),
        (("seed = 1", 'seed = "one"'), "'seed' must be int"),
        (("test_fraction = 0.2", "test_fraction = 0.9"), "split fractions"),
        (('labels = ["A", "B"]', 'labels = ["A", "A"]'), "at least two distinct labels"),
        (('roots = ["data"]', "roots = []"), "non-empty list"),
        (('kind = "crops"', 'kind = "crops"\ngroup = "block:0"'), "group 'block:0' is not allowed"),
        (('kind = "crops"', 'kind = "crops"\nrole = "test"'), "role 'test' is not allowed"),
        (('kind = "crops"', 'kind = "crops"\nvotes = 3'), "'votes' must be a CSV path"),
        (('name = "tiny"', ""), "missing key 'name'"),
        (("[[sources]]", "[[nothing]]"), "missing key 'name'|needs at least one"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, VALID.replace(*change)))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(write(tmp_path, "name = [unclosed"))
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_missing_folder_is_named(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, VALID))
    with pytest.raises(RecipeError, match="folder .*data does not exist"):
        recipe.resolve_roots(tmp_path)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fit", "--help"], ["(default: 40)", "(default: 0.3)", "--balance"]),
        (["compare", "--help"], ["default: original,variant1,variant2,fast,fast_small"]),
    ],
)
def test_training_help_shows_defaults(capsys: pytest.CaptureFixture[str], argv: list[str],
                                      expected: list[str]) -> None:
    from train.__main__ import main

    with pytest.raises(SystemExit):
        main(argv)
    flat = " ".join(capsys.readouterr().out.split())
    for text in expected:
        assert text in flat, text


def test_export_help_is_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    from export.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "--name" in out and "metadata" in out
