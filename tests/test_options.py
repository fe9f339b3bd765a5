"""skyseg.options: one dataclass gives the command line, the YAML section and the API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from skyseg.errors import ConfigError
from skyseg.options import (
    add_options,
    convert_value,
    from_args,
    from_mapping,
    option,
    parse_bool,
    to_argv,
    to_mapping,
)


@dataclass
class Example:
    epochs: int = option(30, "passes over the data")
    learning_rate: float = option(1e-3, "step size")
    backbone: str = option("resnet34", "encoder", choices=("resnet34", "lite0"))
    init: Path | None = option(None, "run to start from")
    tta: bool = option(False, "average flipped predictions")
    wrap: bool = option(True, "wrap panoramas", flag="--no-wrap")
    sizes: list[int] = option(default_factory=lambda: [256], help="patch sizes")
    internal: int = option(7, "not on the command line", cli=False, yaml=False)


def parser():
    result = argparse.ArgumentParser(prog="example")
    add_options(result, Example)
    return result


def test_command_line_defaults_are_the_dataclass_defaults():
    assert from_args(Example, parser().parse_args([])) == Example()


def test_command_line_round_trip():
    args = parser().parse_args(["--epochs", "5", "--learning-rate", "0.01", "--backbone", "lite0",
                                "--init", "runs/a", "--tta", "--no-wrap", "--sizes", "128,64"])
    assert from_args(Example, args) == Example(epochs=5, learning_rate=0.01, backbone="lite0",
                                               init=Path("runs/a"), tta=True, wrap=False,
                                               sizes=[128, 64])


@pytest.mark.parametrize("argv", [["--epochs", "2.5"], ["--backbone", "vgg"],
                                  ["--internal", "3"], ["--learning-rate", "fast"]])
def test_command_line_refuses_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(argv)
    assert stop.value.code == 2
    assert "example: error:" in capsys.readouterr().err


def test_help_lists_each_option_with_its_help():
    text = parser().format_help()
    for flag, words in [("--epochs", "passes over the data"), ("--no-wrap", "wrap panoramas"),
                        ("--init", "run to start from")]:
        assert flag in text and words in text
    assert "--internal" not in text


def test_yaml_section_converts_types_and_paths_relative_to_the_file(tmp_path):
    options = from_mapping(Example, {"epochs": "12", "tta": "yes", "init": "runs/a",
                                     "sizes": [64, "32"]}, source="c.yml", base=tmp_path)
    assert options == Example(epochs=12, tta=True, init=tmp_path / "runs/a", sizes=[64, 32])


@pytest.mark.parametrize("values, match", [
    ({"epoch": 3}, r"c\.yml: unknown setting\(s\) \['epoch'\]; known: .*epochs"),
    ({"internal": 3}, r"unknown setting\(s\) \['internal'\]"),
    ({"epochs": 2.5}, r"c\.yml: epochs = 2\.5 is not a valid int"),
    ({"epochs": True}, r"epochs = True is not a valid int"),
    ({"tta": "maybe"}, r"c\.yml: tta must be true or false, got 'maybe'"),
    ({"epochs": None}, r"epochs needs a value"),
    ({"backbone": "vgg"}, r"c\.yml: backbone = 'vgg'; choose one of resnet34, lite0"),
])
def test_yaml_section_refuses_bad_settings(values, match):
    with pytest.raises(ConfigError, match=match):
        from_mapping(Example, values, source="c.yml")


def test_yaml_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="c.yml: expected a mapping of settings, got list"):
        from_mapping(Example, [1, 2], source="c.yml")


def test_yaml_section_updates_a_given_object():
    start = Example(epochs=3)
    assert from_mapping(Example, {"tta": True}, source="c", start=start) == Example(epochs=3,
                                                                                    tta=True)


def test_to_mapping_is_plain_and_reads_back():
    options = Example(init=Path("runs/a"), sizes=[1, 2])
    plain = to_mapping(options)
    assert plain["init"] == "runs/a" and plain["sizes"] == [1, 2] and plain["internal"] == 7
    del plain["internal"]
    assert from_mapping(Example, plain, source="round trip") == options


@pytest.mark.parametrize("value, kind, expected", [
    ("3", int, 3), ("3.0", int, 3), ("0.5", float, 0.5), ("off", bool, False),
    (None, int | None, None), ("a, b", tuple[str, ...], ("a", "b")),
    ({"train": "t.txt"}, dict[str, Path], {"train": Path("t.txt")}),
])
def test_convert_value(value, kind, expected):
    assert convert_value("key", value, kind) == expected


@pytest.mark.parametrize("text, expected", [("TRUE", True), ("no", False), ("1", True),
                                            ("Off", False)])
def test_parse_bool(text, expected):
    assert parse_bool(text) is expected


def test_parse_bool_names_the_flag():
    with pytest.raises(ConfigError, match="TRAIN must be true or false, got 'sure'"):
        parse_bool("sure", name="TRAIN")


def test_to_argv_gives_the_fields_that_differ_from_their_defaults():
    options = Example(epochs=5, learning_rate=0.002, init=Path("runs/a"), wrap=False,
                      sizes=[128, 64], tta=True)
    argv = to_argv(options)
    assert argv == ["--epochs", "5", "--learning-rate", "0.002", "--init", "runs/a", "--tta",
                    "--no-wrap", "--sizes", "128,64"]
    assert from_args(Example, parser().parse_args(argv)) == options
    assert to_argv(Example()) == []
    assert to_argv(options, skip=("epochs", "sizes"))[:2] == ["--learning-rate", "0.002"]


@dataclass
class Repeated:
    split_files: dict[str, str] = option(default_factory=dict, help="NAME=FILE",
                                         flag="--split-file", action="append",
                                         metavar="NAME=FILE")
    cap: int | None = option(7, "at most this many (none: no limit)")


def test_to_argv_repeats_appended_options_and_spells_none():
    result = argparse.ArgumentParser()
    add_options(result, Repeated)
    assert "--split-file NAME=FILE" in result.format_help()
    assert to_argv(Repeated(split_files={"train": "t.txt", "val": "v.txt"}, cap=None)) == [
        "--split-file", "train=t.txt", "--split-file", "val=v.txt", "--cap", "none"]
    assert convert_value("cap", "None", int | None) is None


def test_to_argv_refuses_a_setting_the_command_line_cannot_give():
    with pytest.raises(ValueError, match=r"Example\.internal = 3 has no command-line option"):
        to_argv(Example(internal=3))
    assert to_argv(Example(internal=3), skip=("internal",)) == []


def test_add_options_subset_renamed_without_defaults():
    result = argparse.ArgumentParser()
    add_options(result, Example, only=("epochs", "tta"), flags={"epochs": "--train-epochs"},
                dest_prefix="training.", default=argparse.SUPPRESS)
    assert vars(result.parse_args([])) == {}
    assert "--train-epochs TRAIN_EPOCHS" in result.format_help()
    assert vars(result.parse_args(["--train-epochs", "4", "--tta"])) == {
        "training.epochs": 4, "training.tta": True}


@dataclass
class Names:
    names: tuple[str, ...] = option(("sky",), "category names", flag="--name", nargs="+")


def test_to_argv_gives_several_values_to_an_option_that_takes_several():
    result = argparse.ArgumentParser()
    add_options(result, Names)
    argv = to_argv(Names(names=("sky", "cloud")))
    assert argv == ["--name", "sky", "cloud"]
    assert from_args(Names, result.parse_args(argv)) == Names(names=("sky", "cloud"))


class _OneText(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


@dataclass
class Spellings:
    deterministic: bool | None = option(None, "repeatable ops",
                                        action=argparse.BooleanOptionalAction)
    tracking: str | None = option(None, "track at URI", nargs="?", const="", metavar="URI")
    lists: list[str] = option(default_factory=list, help="NAME=FILE", action=_OneText)


@pytest.mark.parametrize("options, argv", [
    (Spellings(deterministic=False), ["--no-deterministic"]),
    (Spellings(deterministic=True), ["--deterministic"]),
    (Spellings(tracking=""), ["--tracking"]),
    (Spellings(tracking="file:./runs"), ["--tracking", "file:./runs"]),
    (Spellings(lists=["a=1", "b=2"]), ["--lists", "a=1", "--lists", "b=2"]),
])
def test_to_argv_spells_each_kind_of_action(options, argv):
    assert to_argv(options) == argv
    result = argparse.ArgumentParser()
    add_options(result, Spellings)
    assert from_args(Spellings, result.parse_args(argv)) == options
