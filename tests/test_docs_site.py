"""The documentation site (mkdocs.yml, docs/): ``mkdocs build --strict`` passes (no broken link, anchor or reference),
the API reference lists every name of ``stlens.__all__``, and every command's page shows a table of exactly its
options, generated from ``stlens.cli.build_parser()`` by docs/hooks.py."""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stlens
from stlens.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text("utf-8")
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if not re.match(r"^[a-z]+:", target):
            assert (ROOT / target.split("#", 1)[0]).exists(), f"README links to a missing file: {target}"
    for verb in _commands(build_parser()):  # one line per command, linked to its page
        assert f"[`{verb}`](docs/" in readme, f"README has no line for `stlens {verb}`"


def _hooks():
    spec = importlib.util.spec_from_file_location("stlens_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command: ``measure``, ``pairs check``, ... → its parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                inner = _commands(child, f"{prefix}{name} ")
                found.update(inner or {f"{prefix}{name}": child})
    return found


def _markers() -> dict[str, Path]:
    found = {}
    for page in DOCS.rglob("*.md"):
        for command in re.findall(r"^<!--\s*options:\s*([\w -]+?)\s*-->\s*$", page.read_text("utf-8"), re.MULTILINE):
            assert command not in found, f"two option tables for {command}: {found[command]}, {page}"
            found[command] = page
    return found


def _page_html(site: Path, page: Path) -> str:
    rel = page.relative_to(DOCS).with_suffix("")
    target = site / ("index.html" if rel.name == "index" else rel / "index.html")
    return target.read_text("utf-8")


def test_api_reference_lists_every_public_name(site):
    page = (site / "reference" / "index.html").read_text("utf-8")
    missing = [name for name in stlens.__all__ if not name.startswith("__") and f'id="stlens.{name}"' not in page]
    assert not missing, f"not in the API reference: {missing}"
    # each entry is rendered by mkdocstrings from the object's docstring, not an empty heading
    assert page.count('class="doc doc-object') >= len(stlens.__all__) - 1


def test_every_command_has_a_page_with_its_options(site):
    commands = _commands(build_parser())
    markers = _markers()
    assert sorted(markers) == sorted(commands), "every stlens command needs one page with <!-- options: COMMAND -->"
    for command, parser in commands.items():
        text = html.unescape(re.sub(r"<[^>]+>", "", _page_html(site, markers[command])))
        options = [s for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
                   for s in a.option_strings]
        missing = [s for s in options if s not in text]
        assert not missing, f"options of `stlens {command}` missing from {markers[command].name}: {missing}"
        for action in parser._actions:  # the help text itself, so an edited help string shows on the site
            if action.help and action.help != argparse.SUPPRESS and action.option_strings and action.dest != "help":
                words = " ".join(parser._get_formatter()._expand_help(action).replace("`", "").split())[:40]
                assert words in " ".join(text.split()), f"help of {action.option_strings[0]} ({command}) not shown"


def test_nav_sections(site):
    index = (site / "index.html").read_text("utf-8")
    for section in ("Getting started", "Verbs", "Concepts", "Studies", "Reference"):
        assert section in index
    assert (site / "changelog" / "index.html").exists()


def test_tutorials_are_rendered_only_when_present(tmp_path):
    hooks = _hooks()
    script = "\n".join([
        "# ---", "# jupyter:", "#   jupytext:", "#     formats: py:percent", "# ---", "",
        "# %% [markdown]", "# # Measure a model", "#", "# Some *text*.", "",
        "# %%", "import stlens", "print(stlens.__version__)", "",
        "# %% tags=['hide']", "x = 1", ""])
    markdown = hooks.percent_to_markdown(script)
    assert markdown == "# Measure a model\n\nSome *text*.\n\n```python\nimport stlens\nprint(stlens.__version__)\n```" \
                       "\n\n```python\nx = 1\n```\n"
    docs = tmp_path / "docs"
    docs.mkdir()
    nav = [{"Home": "index.md"}, {"Getting started": ["getting-started.md"]}, {"Verbs": []}]
    config = {"docs_dir": str(docs), "nav": list(nav)}
    assert hooks.on_config(config)["nav"] == nav  # no docs/tutorials: no section
    (docs / "tutorials").mkdir()
    assert hooks.on_config(config)["nav"] == nav  # an empty folder: no section
    (docs / "tutorials" / "a_measure.py").write_text(script)
    (docs / "tutorials" / "b_bias.md").write_text("# Is my model static-biased?\n")
    assert hooks.on_config(config)["nav"][2] == {"Tutorials": [{"Measure a model": "tutorials/a_measure.md"},
                                                               {"Is my model static-biased?": "tutorials/b_bias.md"}]}


def test_links_out_of_docs_become_paths():
    hooks = _hooks()

    class Page:
        class file:  # noqa: N801 - the shape of mkdocs' Page.file
            src_uri = "measure.md"

    config = {"docs_dir": str(DOCS)}
    text = ("[the script](../benchmarks/scaling.py), [`benchmarks/validity.py`](../benchmarks/validity.py), "
            "[formats](formats.md#1), [web](https://example.org), [gone](../nowhere.py)")
    assert hooks._rewrite_links(text, Page, config) == (
        "the script (`benchmarks/scaling.py`), `benchmarks/validity.py`, [formats](formats.md#1), "
        "[web](https://example.org), [gone](../nowhere.py)")
