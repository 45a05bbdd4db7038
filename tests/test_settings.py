"""settings.toml and the settings' CLI flags: fast unit tests (the mutation report found these paths unchecked)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from easyphoto_app.settings import (
    SECTIONS,
    RLConfig,
    TrainConfig,
    add_config_args,
    config_flags,
    load_settings,
    resolve_data_dir,
    save_settings,
)


def _changed(value):
    """A value of the same type that differs from the default, with the characters TOML must escape."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 3 + 0.25
    return value + ' "quoted" C:\\Users\\anna'


def test_every_setting_survives_a_save_and_load_with_non_default_values(tmp_path):
    settings = load_settings(tmp_path)
    for section in SECTIONS:
        obj = getattr(settings, section)
        for f in dataclasses.fields(obj):
            setattr(obj, f.name, _changed(getattr(obj, f.name)))
    save_settings(settings)
    again = load_settings(tmp_path)
    for section in SECTIONS:
        assert dataclasses.asdict(getattr(again, section)) == dataclasses.asdict(getattr(settings, section)), section


def test_without_a_data_dir_or_easyphoto_home_the_data_goes_to_the_platform_user_folder(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.delenv("EASYPHOTO_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == (tmp_path / "xdg" / "EasyPhoto").resolve()
    assert (
        resolve_data_dir()
        == __import__("pathlib").Path(platformdirs.user_data_dir("EasyPhoto", appauthor=False)).resolve()
    )
    monkeypatch.setenv("EASYPHOTO_HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == (tmp_path / "home").resolve()
    assert resolve_data_dir(str(tmp_path / "cli")) == (tmp_path / "cli").resolve()


@pytest.mark.parametrize("on", [True, False])
def test_a_checkbox_becomes_its_flag_or_its_no_flag(on):
    flags = config_flags(TrainConfig, ["train_text_encoder"], [on])
    assert flags == (["--train-text-encoder"] if on else ["--no-train-text-encoder"])
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig)
    assert vars(parser.parse_args(flags))["TrainConfig.train_text_encoder"] is on


@pytest.mark.parametrize(
    "command, flags, section, expected",
    [
        (
            ["train", "--user", "a"],
            ["--max-train-steps", "0", "--no-train-text-encoder"],
            "train",
            {"max_train_steps": 0, "train_text_encoder": False},
        ),
        (
            ["rl", "--user", "a"],
            ["--eval-every", "0", "--seed", "0", "--learning-rate", "0"],
            "rl",
            {"eval_every": 0, "seed": 0, "learning_rate": 0.0},
        ),
        (
            ["portrait", "--user", "a", "--template", "t.jpg"],
            ["--face-index", "0", "--no-controlnet"],
            "portrait",
            {"face_index": 0, "controlnet": False},
        ),
    ],
)
def test_a_flag_given_as_0_or_no_overrides_the_settings_file(tmp_path, command, flags, section, expected):
    """0, 0.0 and False are values the user typed: they must win over settings.toml, not be taken for 'not given'."""
    from easyphoto_app import cli

    settings = load_settings(tmp_path)
    for name in expected:  # the file says something else for each
        value = getattr(getattr(settings, section), name)
        setattr(getattr(settings, section), name, True if isinstance(value, bool) else 7)
    save_settings(settings)

    def parsed(*argv):
        got = cli.make_settings(cli.build_parser().parse_args(["--data-dir", str(tmp_path), *argv]))
        return {name: getattr(getattr(got, section), name) for name in expected}

    assert parsed(*command, *flags) == expected
    assert all(value in (True, 7) for value in parsed(*command).values())  # not given: the file's


def test_ui_values_and_names_of_different_lengths_are_refused():
    with pytest.raises(ValueError):
        config_flags(RLConfig, ["max_hours", "epochs"], [0.5])


def test_the_settings_file_explains_each_setting_above_it(tmp_path):
    lines = load_settings(tmp_path).file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# EasyPhoto settings. Delete a line to get its default back."
    for section, cls in SECTIONS.items():
        start = lines.index(f"[{section}]")
        for f in dataclasses.fields(cls):
            at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{f.name} = "))
            assert f.metadata["help"] and lines[at - 1] == f"# {f.metadata['help']}", (section, f.name)


def test_every_input_in_the_ui_gets_its_settings_help_as_its_hint():
    from easyphoto_app.settings import help_of

    assert help_of(RLConfig, "max_hours").startswith("Time budget in hours")
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert help_of(cls, f.name) == f.metadata["help"] != ""


def test_on_windows_the_data_folder_is_local_appdata_easyphoto_not_easyphoto_twice(tmp_path, monkeypatch):
    """platformdirs' Windows rules, run here: appauthor=False keeps the author folder out."""
    import platformdirs
    import platformdirs.windows as win

    from easyphoto_app.settings import default_data_dir

    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    monkeypatch.setattr(win, "_RESOLVE_WIN_FOLDER", win.get_win_folder_from_env_vars)  # no ctypes.windll here
    monkeypatch.setattr(platformdirs, "PlatformDirs", win.Windows)
    assert default_data_dir() == tmp_path / "Local" / "EasyPhoto"


def test_showing_settings_leaves_the_model_field_alone_when_it_already_shows_the_model_in_use():
    """The refresh answers after the tab opens; had it always written the field, what the user began typing in the
    meantime was lost (CI saw it). It writes only a field that shows something else, as after a reload."""
    pytest.importorskip("gradio")
    from easyphoto_app.ui.settings_tab import model_field_on_show

    untouched = model_field_on_show("demo", "demo")
    assert isinstance(untouched, dict) and "value" not in untouched
    assert model_field_on_show("demo", "/models/a.safetensors") == "/models/a.safetensors"


def test_the_assets_folder_is_found_in_one_place_and_holds_what_the_app_reads():
    from pathlib import Path

    from easyphoto_app.settings import ASSETS

    package = Path(__file__).resolve().parents[1] / "easyphoto_app"
    finders = sorted(p.name for p in package.rglob("*.py") if '"assets"' in p.read_text(encoding="utf-8"))
    assert finders == ["settings.py"]
    assert all((ASSETS / name).exists() for name in ("styles.json", "rl_prompts.txt", "sd15", "face_model"))
