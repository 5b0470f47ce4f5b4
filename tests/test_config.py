"""Typed configs: defaults < file < flags, unknown keys named, stage sections."""

import argparse
from dataclasses import dataclass, field

import pytest

from weakwater.config import add_arguments, resolve


@dataclass
class Example:
    lr: float = 1e-3
    steps: int = 10
    compile: bool = False
    targets: list[str] = field(default_factory=lambda: ["q_proj"])
    model: dict = field(default_factory=dict)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_arguments(parser, Example, skip=("model",))
    return parser.parse_args(argv)


def test_flags_override_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("lr = 0.5\nsteps = 7\n[model]\ndim = 64\n[sft]\nsteps = 3\n[dpo]\nsteps = 99\n")
    cfg = resolve(Example, parse(["--config", str(path), "--lr", "0.25", "--compile"]), section="sft")
    assert (cfg.lr, cfg.steps, cfg.compile, cfg.model) == (0.25, 3, True, {"dim": 64})
    assert resolve(Example, parse([]), section="sft") == Example()


def test_yaml_lists_and_comma_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("targets: [q_proj, v_proj]\n")
    assert resolve(Example, parse(["--config", str(path)])).targets == ["q_proj", "v_proj"]
    assert resolve(Example, parse(["--targets", "k_proj,o_proj"])).targets == ["k_proj", "o_proj"]


def test_bad_values_and_unknown_keys_are_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("lr = 1e-3\nlearning_rate = 2\n")
    with pytest.raises(ValueError, match="learning_rate"):
        resolve(Example, parse(["--config", str(path)]))
    with pytest.raises(ValueError, match="steps.*int"):
        resolve(Example, parse(["--steps", "ten"]))
    with pytest.raises(FileNotFoundError):
        resolve(Example, parse(["--config", str(tmp_path / "missing.toml")]))
