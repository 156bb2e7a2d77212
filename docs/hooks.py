"""MkDocs hooks of the stlens site (mkdocs.yml ``hooks:``); no part of the ``stlens`` package.

- ``<!-- options: VERB -->`` (``VERB`` = ``measure``, ``pairs check``, ...) on a page becomes the table of that
  command's options, read from ``stlens.cli.build_parser()``: the tables cannot drift from the parsers.
- ``<!-- api: stlens -->`` becomes one mkdocstrings block per name of ``stlens.__all__``, each under a heading
  ``stlens.NAME`` (the lazy attributes and callable packages resolved to the function or class they are).
- ``tutorials/*.py`` (jupytext percent format: ``# %%`` code cells, ``# %% [markdown]`` text cells) are rendered as
  pages, and ``tutorials/*.md`` are used as they are; the nav gets a "Tutorials" section only when such files exist.
- ``changelog.md`` is generated from the repository's ``CHANGELOG.md``.
- A relative link to a file of the repository outside ``docs/`` (``../benchmarks/x.py``) becomes the plain path in
  code; a link that resolves nowhere is left as it is, for ``mkdocs build --strict`` to report.
"""

from __future__ import annotations

import argparse
import html
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

SRC = str(Path(__file__).resolve().parents[1] / "src")
if SRC not in sys.path:  # the site documents this checkout's stlens, installed or not
    sys.path.insert(0, SRC)

OPTIONS = re.compile(r"^<!--\s*options:\s*([\w -]+?)\s*-->\s*$", re.MULTILINE)
API = re.compile(r"^<!--\s*api:\s*stlens\s*-->\s*$", re.MULTILINE)
LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")
TUTORIALS = "tutorials"


def _repo(config) -> Path:
    return Path(config["docs_dir"]).resolve().parent


# -- tutorials ------------------------------------------------------------------------------------------------------

def _tutorial_sources(config) -> list[Path]:
    folder = Path(config["docs_dir"]) / TUTORIALS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".py", ".md") and not p.name.startswith(("_", ".")))


def percent_to_markdown(text: str) -> str:
    """A jupytext percent-format script as Markdown: text cells unwrapped from their ``# ``, code cells fenced."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "# ---":  # the jupytext YAML header
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "# ---"), 0)
        lines = lines[end + 1:]
    cells: list[tuple[str, list[str]]] = [("code", [])]
    for line in lines:
        marker = re.match(r"^# %%(.*)$", line)
        if marker:
            kind = "markdown" if re.search(r"\[(markdown|md)\]", marker.group(1)) else "code"
            cells.append((kind, []))
        else:
            cells[-1][1].append(line)
    out = []
    for kind, body in cells:
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if not body:
            continue
        if kind == "markdown":
            out.append("\n".join(re.sub(r"^# ?", "", line) if line.startswith("#") else line for line in body))
        else:
            out.append("```python\n" + "\n".join(body) + "\n```")
    return "\n\n".join(out) + "\n"


def _title(markdown: str, fallback: str) -> str:
    heading = re.search(r"^#\s+(.+)$", markdown, re.MULTILINE)
    return heading.group(1).strip() if heading else fallback


def on_config(config):
    sources = _tutorial_sources(config)
    if not sources or config["nav"] is None:
        return config
    entries = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        markdown = percent_to_markdown(text) if path.suffix == ".py" else text
        entries.append({_title(markdown, path.stem.replace("_", " ")): f"{TUTORIALS}/{path.stem}.md"})
    nav = [item for item in config["nav"] if not (isinstance(item, dict) and "Tutorials" in item)]
    after = next((i + 1 for i, item in enumerate(nav) if isinstance(item, dict) and "Getting started" in item), 1)
    nav.insert(after, {"Tutorials": entries})
    config["nav"] = nav
    return config


def on_files(files, config):
    for path in _tutorial_sources(config):
        if path.suffix == ".py":
            uri = f"{TUTORIALS}/{path.stem}.md"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, content=percent_to_markdown(path.read_text("utf-8"))))
    changelog = _repo(config) / "CHANGELOG.md"
    if changelog.exists() and files.get_file_from_path("changelog.md") is None:
        text = changelog.read_text(encoding="utf-8")
        # CHANGELOG.md sits at the repository root: its links to docs/x.md are x.md here
        text = re.sub(r"\]\(docs/", "](", text)
        files.append(File.generated(config, "changelog.md", content=text))
    return files


# -- option tables --------------------------------------------------------------------------------------------------

def _parser(command: str) -> argparse.ArgumentParser:
    from stlens.cli import build_parser

    parser = build_parser()
    for word in command.split():
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            raise KeyError(f"no stlens command {command!r} (marker <!-- options: {command} -->)")
        parser = sub.choices[word]
    return parser


def _cell(text: str) -> str:
    text = html.escape(" ".join(str(text).split()), quote=False)
    return text.replace("|", "\\|").replace("*", "\\*").replace("[", "\\[").replace("_", "\\_")


def _code(text: str) -> str:
    return "`" + text + "`"  # Python-Markdown's tables split no cell at a pipe inside a code span


def option_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(option as typed, default, help) for every documented option and positional argument of ``parser``."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                metavar = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
                names += f" {metavar}"
        else:
            names = formatter._format_args(action, formatter._get_default_metavar_for_positional(action))
        default = action.default
        if action.required:
            shown = "required"
        elif action.nargs == 0 or default in (None, argparse.SUPPRESS):
            shown = ""
        else:
            shown = _code(",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default))
        rows.append((names, shown, formatter._expand_help(action) if action.help else ""))
    return rows


def options_table(command: str) -> str:
    rows = option_rows(_parser(command))
    lines = [f"<!-- generated from stlens.cli.build_parser(): stlens {command} -h -->", "",
             "| option | default | meaning |", "|---|---|---|"]
    lines += [f"| {_code(names)} | {default} | {_cell(text)} |" for names, default, text in rows]
    return "\n".join(lines) + "\n"


# -- API reference --------------------------------------------------------------------------------------------------

def api_entries() -> list[tuple[str, str]]:
    """(public name, the dotted path of the object it is) for every name in ``stlens.__all__``."""
    import stlens

    verbs, classes = [], []
    for name in stlens.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(stlens, name)
        obj = getattr(obj, "__wrapped__", obj)  # a callable package: the verb function itself
        (classes if isinstance(obj, type) else verbs).append((name, f"{obj.__module__}.{obj.__qualname__}"))
    return verbs + classes  # the verbs first, then what they return and take


def api_reference() -> str:
    blocks = []
    for name, path in api_entries():
        blocks.append(f"## `stlens.{name}` {{ #stlens.{name} }}\n\n::: {path}\n")
    return "\n".join(blocks)


# -- links out of docs/ ---------------------------------------------------------------------------------------------

def _rewrite_links(markdown: str, page, config) -> str:
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    source = repo if page.file.src_uri == "changelog.md" else docs / posixpath.dirname(page.file.src_uri)

    def replace(match: re.Match) -> str:
        text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path = (source / target.split("#", 1)[0]).resolve()
        try:
            path.relative_to(docs)
            return match.group(0)  # inside docs/: mkdocs checks it
        except ValueError:
            pass
        if not path.exists():
            return match.group(0)
        shown = path.relative_to(repo).as_posix()
        if shown.strip("`") in text or text.strip("`") in shown:
            return f"`{shown}`" if not text.startswith("`") else text
        return f"{text} (`{shown}`)"

    return LINK.sub(replace, markdown)


def _table_code_pipes(markdown: str) -> str:
    """GitHub needs ``\\|`` for a pipe in a code span in a table cell; Python-Markdown shows the backslash."""
    def row(line: str) -> str:
        if not line.lstrip().startswith("|"):
            return line
        return re.sub(r"`[^`\n]*`", lambda m: m.group(0).replace("\\|", "|"), line)

    return "\n".join(row(line) for line in markdown.split("\n"))


def on_page_markdown(markdown, page, config, files):
    markdown = _table_code_pipes(markdown)
    markdown = OPTIONS.sub(lambda m: options_table(m.group(1)), markdown)
    markdown = API.sub(lambda m: api_reference(), markdown)
    return _rewrite_links(markdown, page, config)
