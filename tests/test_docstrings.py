"""Every name of ``stlens.__all__`` has a Google-style docstring (the style the documentation site parses) with its
arguments, what it returns and an example that runs.

The rule, checked per name (the lazy attributes and callable packages resolved to the function or class they are,
as docs/hooks.py does for the API reference):

- ``Args:`` lists exactly the parameters of the signature, each once and in signature order (``self``, ``*args``
  and ``**kwargs`` excepted; a class's parameters are its constructor's). A callable without such parameters
  (``StlensError``) has no ``Args:`` section.
- A function has a ``Returns:`` section; a class has none (its docstring documents the constructor).
- An ``Examples:`` (or ``Example:``) section holds at least one ``>>>`` line and no ``+SKIP``, and its examples pass
  when run as doctests (``doctest`` on that object alone, with ``stlens`` in the globals).

The sections are read by a small parser here (so the check runs without the docs extra) and, where ``griffe`` is
installed, also by griffe's Google parser, which must find the same parameters (what mkdocstrings shows).
"""

from __future__ import annotations

import doctest
import inspect
import re
import tempfile
import time

import pytest
import torch

import stlens

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = [name for name in stlens.__all__ if not name.startswith("__")]
SECTION = re.compile(r"^(\w[\w ]*):\s*$")
KNOWN = {"args": "args", "arguments": "args", "parameters": "args", "returns": "returns", "yields": "returns",
         "example": "examples", "examples": "examples", "raises": "raises", "attributes": "attributes",
         "note": "note", "notes": "note", "warning": "note", "warnings": "note", "see also": "note"}
ENTRY = re.compile(r"^(\*{0,2}\w+)(?:\s*\(([^)]*)\))?\s*:\s*(.*)$")


def resolve(name: str):
    """The function or class ``stlens.NAME`` is (a callable package: the verb function itself)."""
    obj = getattr(stlens, name)
    return getattr(obj, "__wrapped__", obj)


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a cleaned docstring: kind → the section's lines, dedented one level; the prose
    before the first section is ``text``."""
    found: dict[str, list[str]] = {"text": []}
    current = "text"
    for line in doc.splitlines():
        header = SECTION.match(line)
        if header and header.group(1).lower() in KNOWN:
            current = KNOWN[header.group(1).lower()]
            if current in found:
                raise AssertionError(f"two {header.group(1)!r} sections")
            found[current] = []
            continue
        if current != "text" and line.strip() and not line.startswith(" "):
            current = "text"  # a paragraph after the sections, at the left margin
        found[current].append(line[4:] if current != "text" else line)
    return found


def documented_parameters(lines: list[str]) -> list[str]:
    """The names of an ``Args:`` section's entries (``name: text`` or ``name (type): text`` at its first indent;
    continuation lines are indented further)."""
    names = []
    for line in lines:
        if not line.strip() or line.startswith((" ", "\t")):
            continue
        entry = ENTRY.match(line)
        if entry is None:
            raise AssertionError(f"an Args line that is no `name: description` entry: {line!r}")
        if not entry.group(3).strip():
            raise AssertionError(f"the argument {entry.group(1)!r} has no description")
        names.append(entry.group(1).lstrip("*"))
    return names


def signature_parameters(obj) -> list[str]:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin-based class (an exception): no named parameters
        return []
    return [p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def problems(obj) -> list[str]:
    """What the rule finds wrong with ``obj``'s docstring (empty: nothing)."""
    doc = inspect.getdoc(obj) if obj.__doc__ else None
    if not doc:
        return ["no docstring"]
    try:
        found = sections(doc)
        wrong = []
        expected = signature_parameters(obj)
        if expected or "args" in found:
            documented = documented_parameters(found.get("args", []))
            if "args" not in found:
                wrong.append("no Args section")
            missing = [p for p in expected if p not in documented]
            unknown = [p for p in documented if p not in expected]
            twice = sorted({p for p in documented if documented.count(p) > 1})
            if missing:
                wrong.append(f"Args misses {missing}")
            if unknown:
                wrong.append(f"Args documents {unknown}, not in the signature")
            if twice:
                wrong.append(f"Args documents {twice} twice")
            if not (missing or unknown or twice) and documented != expected:
                wrong.append(f"Args is not in signature order: {documented} vs {expected}")
        if isinstance(obj, type):
            if "returns" in found:
                wrong.append("a class has no Returns section (its docstring documents the constructor)")
        elif not "".join(found.get("returns", [])).strip():
            wrong.append("no Returns section")
        example = "\n".join(found.get("examples", []))
        if ">>>" not in example:
            wrong.append("no Examples section with a >>> line")
        if "+SKIP" in doc:
            wrong.append("an example is skipped (+SKIP)")
        return wrong
    except AssertionError as error:
        return [str(error)]


def run_examples(obj, name: str, globs: dict | None = None) -> doctest.TestResults:
    """Run the doctests of ``obj``'s own docstring (not its members'), with ``stlens`` and ``globs`` in the
    globals."""
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(verbose=False)
    tests = finder.find(obj, f"stlens.{name}", globs={"stlens": stlens, **(globs or {})})
    assert tests and any(t.examples for t in tests), f"stlens.{name}: doctest finds no example"
    for test in tests:
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_sections(name):
    assert problems(resolve(name)) == [], f"stlens.{name}: {problems(resolve(name))}"


@pytest.mark.parametrize("name", NAMES)
def test_griffe_reads_the_same_parameters(name):
    griffe = pytest.importorskip("griffe")
    obj = resolve(name)
    docstring = griffe.Docstring(inspect.getdoc(obj) or "")
    parsed = docstring.parse("google", warnings=False)
    names = [p.name.lstrip("*") for s in parsed if s.kind.value == "parameters" for p in s.value]
    assert names == documented_parameters(sections(inspect.getdoc(obj)).get("args", []))
    kinds = {s.kind.value for s in parsed}
    assert "examples" in kinds
    assert ("returns" in kinds) != isinstance(obj, type)


@pytest.mark.parametrize("name", NAMES)
def test_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and its tempfile.mkdtemp() folders too
    start = time.perf_counter()
    with torch.random.fork_rng():
        failed, attempted = run_examples(resolve(name), name)
    seconds = time.perf_counter() - start
    print(f"stlens.{name}: {attempted} examples, {seconds:.1f} s")
    assert attempted > 0 and failed == 0, f"stlens.{name}: {failed} of {attempted} examples failed (see above)"


# -- the check can fail ---------------------------------------------------------------------------------------------

def well_documented(model: str, data: str, *, pairs: int = 4) -> int:
    """A dummy.

    Args:
        model: a model.
        data: the data.
        pairs: pairs per factor.

    Returns:
        The number of pairs.

    Examples:
        >>> well_documented("m", "d", pairs=3)
        3
    """
    return pairs


def missing_argument(model: str, data: str, *, pairs: int = 4) -> int:
    """A dummy whose Args forget ``pairs`` and name ``clips``.

    Args:
        model: a model.
        data: the data.
        clips: not a parameter.

    Returns:
        The number of pairs.

    Examples:
        >>> missing_argument("m", "d")
        4
    """
    return pairs


def no_returns_no_example(model: str) -> None:
    """A dummy without Returns and Examples.

    Args:
        model: a model.
    """


def wrong_example(pairs: int) -> int:
    """A dummy whose example is wrong.

    Args:
        pairs: pairs per factor.

    Returns:
        Twice ``pairs``.

    Examples:
        >>> wrong_example(2)
        5
    """
    return 2 * pairs


class Documented:
    """A dummy class.

    Args:
        size: the size.

    Returns:
        Not allowed on a class.

    Examples:
        >>> Documented(3).size
        3
    """

    def __init__(self, size: int):
        self.size = size


def test_the_check_can_fail():
    assert problems(well_documented) == []
    assert run_examples(well_documented, "well_documented", globals()) == (0, 1)
    found = problems(missing_argument)
    assert "Args misses ['pairs']" in found and "Args documents ['clips'], not in the signature" in found
    assert problems(no_returns_no_example) == ["no Returns section", "no Examples section with a >>> line"]
    assert problems(Documented) == ["a class has no Returns section (its docstring documents the constructor)"]
    assert problems(lambda x: x) == ["no docstring"]
    assert run_examples(wrong_example, "wrong_example", globals()).failed == 1
