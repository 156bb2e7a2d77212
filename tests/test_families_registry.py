"""Model families join through one table (``stlens.core.registry.MODEL_FAMILIES``): the dispatcher imports no family,
``stlens.list_models()`` lists every installed family's specs, and ``stlens layers`` runs for every family."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import stlens
from stlens.cli import main
from stlens.core import registry
from stlens.errors import StlensError
from stlens.models.registry import list_models, load_model

HAS_PTV = importlib.util.find_spec("pytorchvideo") is not None
HAS_HF = importlib.util.find_spec("transformers") is not None
needs_ptv = pytest.mark.skipif(not HAS_PTV, reason="pytorchvideo is not installed")
needs_hf = pytest.mark.skipif(not HAS_HF, reason="transformers is not installed")


def test_every_family_module_has_the_family_api():
    assert list(registry.MODEL_FAMILIES) == ["torchvision", "stlens", "pytorchvideo", "hf", "module"]
    for prefix in registry.names("model"):
        family = registry.model_family(prefix)
        build = inspect.signature(family.build)
        assert list(build.parameters)[:1] == ["target"], prefix
        for keyword in ("weights", "frames", "size"):
            assert build.parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY, (prefix, keyword)
            assert build.parameters[keyword].default is None, (prefix, keyword)
        listed = family.names()
        assert all(name.startswith(f"{prefix}:") for name in listed), prefix


def test_the_dispatcher_imports_no_family():
    source = Path(sys.modules["stlens.models.registry"].__file__).read_text(encoding="utf-8")
    families = set(registry.MODEL_FAMILIES.values())
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not imported & (families | {"stlens.models.zoo"}), sorted(imported & families)


def test_list_models_gives_full_specs_family_by_family():
    listed = stlens.list_models()
    assert listed == list_models()
    for spec in ("torchvision:r3d_18", "torchvision:swin3d_t", "stlens:i3d", "stlens:twostream", "stlens:effnet-c2d"):
        assert spec in listed
    assert ("pytorchvideo:x3d_xs" in listed) == HAS_PTV
    assert ("hf:videomae" in listed) == HAS_HF
    assert not any(name.startswith("module:") for name in listed)
    assert len(set(listed)) == len(listed)
    order = [list(registry.MODEL_FAMILIES).index(name.partition(":")[0]) for name in listed]
    assert order == sorted(order)
    assert list_models("stlens") == [name for name in listed if name.startswith("stlens:")]
    with pytest.raises(StlensError, match="unknown model family 'nope:'"):
        list_models("nope")


def test_every_listed_zoo_and_torchvision_spec_loads():
    for spec in list_models("torchvision")[:1] + list_models("stlens"):
        options = "?width=4" if spec in ("stlens:i3d", "stlens:c2d") else ""
        handle = load_model(spec + options, frames=4, size=32)
        assert handle.spec == spec + options and not handle.module.training


def test_unknown_prefix_names_every_family():
    with pytest.raises(StlensError, match="unknown model spec 'resnet'") as info:
        load_model("resnet")
    for form in ("torchvision:<builder>", "stlens:<zoo name>", "pytorchvideo:<name>", "hf:", "module:<pkg.mod>"):
        assert form in str(info.value)


def test_a_new_family_is_one_module_plus_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "stlens_test_toyfamily.py").write_text(textwrap.dedent('''
        import torch
        from stlens.core.handle import ModelHandle
        from stlens.core.spec import InputSpec

        def names():
            return ["toy:conv"]

        def build(target, *, weights=None, frames=None, size=None):
            model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1))
            return ModelHandle(model, f"toy:{target}", InputSpec(frames=4, size=16, resize=16), ["0"])
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "stlens_test_toyfamily", raising=False)
    monkeypatch.setitem(registry.MODEL_FAMILIES, "toy", "stlens_test_toyfamily")
    assert stlens.list_models()[-1] == "toy:conv"
    handle = load_model("toy:conv", frames=2)
    assert (handle.spec, handle.input.frames, handle.module.training) == ("toy:conv", 2, False)


#: one small spec of each family, with the ``stlens layers`` options that keep it fast
LAYERS_CASES = [
    pytest.param(["torchvision:r3d_18", "--frames", "4", "--size", "32"], "layer4", id="torchvision"),
    pytest.param(["stlens:i3d?width=4"], "stage4", id="stlens-i3d"),
    pytest.param(["stlens:twostream?width=4"], "fusion", id="stlens-twostream"),
    pytest.param(["pytorchvideo:x3d_xs", "--frames", "4", "--size", "32"], "blocks.4", id="pytorchvideo",
                 marks=needs_ptv),
    pytest.param(["hf:timesformer?depth=2", "--frames", "2", "--size", "32"], "hidden.2", id="hf", marks=needs_hf),
    pytest.param(["module:conftest:tiny_video_net", "--frames", "4", "--size", "16"], "stage", id="module"),
]


@pytest.mark.parametrize("args,default_layer", LAYERS_CASES)
def test_layers_command_works_for_every_family(args, default_layer, capsys):
    torch.manual_seed(0)
    assert main(["layers", *args]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.startswith(f"{args[0]}: input")
    marked = [row for row in rows if row.startswith(f"* {default_layer} ")]
    assert marked and "not called" not in marked[0]


def test_layers_of_a_two_stream_model_show_both_streams(capsys):
    assert main(["layers", "stlens:twostream?width=4", "--frames", "4", "--size", "32"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "inputs (rgb, flow) (1, 3, 4, 32, 32) + (1, 2, 3, 32, 32)" in header
    handle = load_model("stlens:twostream?width=4")
    for layer in handle.default_layers:
        row = next(line for line in out.splitlines() if line.startswith(f"* {layer} "))
        assert "not called" not in row
    assert any(layer.startswith("rgb.") for layer in handle.default_layers)
    assert any(layer.startswith("flow.") for layer in handle.default_layers)


def test_random_weights_warning_follows_the_family_flag():
    from stlens.models.inspect import random_init

    assert random_init(load_model("stlens:i3d?width=4")) is True
    assert random_init(load_model("torchvision:r3d_18")) is True
    assert random_init(load_model("stlens:i3d", weights="bundled:i3d-motion")) is False
    assert random_init(load_model("module:conftest:tiny_video_net")) is None
