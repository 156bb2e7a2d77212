"""One meaning per option name: every subcommand's options compared with each other (type, choices, default, unit,
kind of action), the exceptions listed with their reasons; old spellings are hidden aliases that warn."""

from __future__ import annotations

import argparse
import inspect
import logging

import pytest

from stlens.cli import ARGUMENT_OPTIONS, FLOWS, as_options, build_parser, main, option_names, subparsers

#: (option, what differs) → why the difference is one meaning, not two.
EXCEPTIONS = {
    ("--batch-size", "default"): "one default per unit: 4 pairs (measure, track), 16 clips (ablate, evaluate, train), "
                                 "8 targets (visualize)",
    ("--batch-size", "unit"): "the unit is stated by the metavar and -h: pairs, clips or targets per forward pass",
    ("--bootstrap", "default"): "replicates over pairs (measure, track: 200) or over clips (ablate, evaluate: 1000; "
                                "selectivity: 200, its intervals are per unit)",
    ("--workers", "default"): "ablate, evaluate and selectivity prepare clips in the main process by default (0): "
                              "their decoding is cheap next to the many forwards on the held batch",
    ("--stylizer", "default"): "measure/track: the source's default (None: palette or rerender); stylize writes one "
                               "stylizer (fourier, the paper's); pairs check compares several",
    ("--layers", "default"): "default layers for measure/track; ablate: every layer of --from; visualize: needed by "
                             "channel targets only; report: each run's last",
    ("--steps", "default"): "optimization steps: train has no default (required), visualize 256, demo 128; explain: "
                            "integrated-gradients steps (16)",
    ("--lr", "default"): "train: AdamW on weights (2e-3); visualize: the input's parameterization (0.05)",
    ("--frames", "default"): "pairs check has no model to take the frames from (16)",
    ("--size", "default"): "pairs check has no model to take the crop from (112)",
    ("--clips", "default"): "pairs check and explain use 8 clips; ablate, evaluate and selectivity use all clips of "
                            "--data by default",
    ("--target", "default"): "visualize: required (what to maximize); explain: the class explained, predicted by "
                             "default",
    ("--layers", "unit"): "explain attributes at one layer (LAYER); the other verbs take several",
    ("--out", "unit"): "a folder everywhere except report (the HTML file) and pairs check (the JSON file)",
}
FILE_OUTPUTS = {"report", "check"}


def _meaning(parser: argparse.ArgumentParser, action: argparse.Action) -> dict[str, object]:
    unit = action.metavar
    if action.option_strings == ["--out"]:
        unit = "file" if parser.prog.split()[-1] in FILE_OUTPUTS else "folder"
    return {"type": getattr(action.type, "__name__", action.type), "choices": tuple(action.choices or ()),
            "default": action.default, "unit": unit, "action": type(action).__name__, "nargs": action.nargs}


def _options() -> dict[str, dict[str, dict[str, object]]]:
    """option → {command: meaning}, for every visible option of every (sub)command."""
    found: dict[str, dict[str, dict[str, object]]] = {}
    for parser in subparsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            name = max(action.option_strings, key=len)
            found.setdefault(name, {})[parser.prog] = _meaning(parser, action)
    return found


def test_every_option_name_has_one_meaning():
    clashes = []
    for name, by_command in _options().items():
        first_command, first = next(iter(by_command.items()))
        for command, meaning in by_command.items():
            for field, value in meaning.items():
                if value != first[field] and (name, field) not in EXCEPTIONS:
                    clashes.append(f"{name}: {field} is {first[field]!r} in '{first_command}' but {value!r} in "
                                   f"'{command}'")
    assert not clashes, "\n".join(clashes)


def test_the_check_sees_a_second_meaning():
    """The walk above must be able to fail: a parser with --pairs meaning clips is caught."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = sub.add_parser("extra")
    extra.add_argument("--pairs", type=int, default=8, metavar="CLIPS")
    meanings = {p.prog: _meaning(p, a) for p in subparsers(parser) for a in p._actions if "--pairs" in
                a.option_strings and a.help != argparse.SUPPRESS}
    assert len({m["unit"] for m in meanings.values()}) == 2 and len({m["default"] for m in meanings.values()}) == 2


def test_shared_options_are_everywhere_they_belong():
    options = _options()
    writers = {"stlens measure", "stlens track", "stlens visualize", "stlens ablate", "stlens evaluate",
               "stlens selectivity", "stlens train", "stlens stylize", "stlens perturb"}
    assert writers <= set(options["--overwrite"])
    assert {"stlens measure", "stlens layers", "stlens ablate", "stlens visualize", "stlens train",
            "stlens evaluate"} <= set(options["--model"])
    assert set(options["--flow"]) == {"stlens measure"} and options["--flow"]["stlens measure"]["choices"] == FLOWS
    assert "--layer" not in options and "--checkpoint-every" not in options


def test_flow_choices_are_the_python_functions():
    from stlens.measure.verb import FLOW_CHOICES

    assert FLOWS == FLOW_CHOICES


def test_batch_size_says_its_unit_in_help():
    for parser in subparsers(build_parser()):
        for action in parser._actions:
            if "--batch-size" in action.option_strings and action.help != argparse.SUPPRESS:
                assert action.metavar.lower() in action.help, parser.prog


@pytest.mark.parametrize(("argv", "dest", "value", "new"), [
    (["measure", "--model", "m", "--data", "d", "--out", "o", "--checkpoint-every", "8"], "checkpoint_every_pairs", 8,
     "--checkpoint-every-pairs"),
    (["train", "--model", "m", "--data", "d", "--out", "o", "--steps", "3", "--checkpoint-every", "2"],
     "checkpoint_every_steps", 2, "--checkpoint-every-steps"),
    (["visualize", "--model", "m", "--target", "channel:0", "--out", "o", "--layer", "stage4"], "layers", "stage4",
     "--layers"),
    (["pairs", "check", "--data", "d", "--out", "o.json", "--pairs", "3"], "clips", 3, "--clips"),
    (["pairs", "check", "--data", "d", "--out", "o.json", "--flow", "tvl1"], "check_flow", "tvl1", "--check-flow"),
    (["pairs", "check", "--data", "d", "--out", "o.json", "--examples"], "example_gifs", True, "--example-gifs"),
    (["report", "r", "--layer", "stage3"], "layers", "stage3", "--layers"),
])
def test_old_spellings_still_work_and_warn(argv, dest, value, new, caplog):
    import stlens.cli

    stlens.cli._warned.clear()
    with caplog.at_level(logging.WARNING, logger="stlens"):
        args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert new in caplog.text and "deprecated" in caplog.text


def test_stylize_size_is_an_error_naming_short_side(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["stylize", "--data", "d", "--out", "o", "--size", "64"])
    assert exc.value.code == 2 and "--short-side" in capsys.readouterr().err


def test_package_errors_are_shown_with_the_option_typed():
    names = option_names(next(p for p in subparsers(build_parser()) if p.prog == "stlens ablate"))
    message = "`batch_size` must be ≥ 1; `units` has no layer 'x'; `unknown` stays"
    assert as_options(message, names) == "--batch-size must be ≥ 1; --from has no layer 'x'; `unknown` stays"
    assert ARGUMENT_OPTIONS["from_run"] == "--from"


def test_cli_error_names_the_option_and_python_error_the_argument(capsys, tmp_path):
    import stlens

    assert main(["measure", "--model", "stlens:c2d?classes=4&width=8", "--data", "sample:", "--batch-size", "0",
                 "--out", str(tmp_path / "m")]) == 2
    assert "--batch-size must be ≥ 1" in capsys.readouterr().err
    with pytest.raises(stlens.StlensError, match="`batch_size` must be ≥ 1"):
        stlens.measure("stlens:c2d?classes=4&width=8", "sample:", batch_size=0)
    assert not (tmp_path / "m").exists()


VERBS = ["measure", "layers", "ablate", "perturb", "visualize", "track", "train", "stylize", "check_pairs", "report",
         "evaluate", "selectivity"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_its_real_signature_after_every_submodule_is_imported(verb):
    import importlib
    import pkgutil

    import stlens

    for info in pkgutil.walk_packages(stlens.__path__, "stlens."):
        if info.name not in ("stlens.__main__",):
            importlib.import_module(info.name)
    function = getattr(stlens, verb)
    parameters = inspect.signature(function).parameters
    assert "args" not in parameters and "kwargs" not in parameters
    assert len(parameters) >= 2, verb
    assert callable(function)
    text = inspect.getdoc(function) or ""
    assert len(text) > 100, verb
