"""Run folders: one run of one verb per folder, owned through a marker file, written in full or not at all.

The rules (docs/reliability.md):

- A run folder holds one run of one verb. ``DIR/.stlens-run.json`` (the marker) names the verb, a run id, the status
  (``complete``, ``interrupted``, ``running`` for resumable verbs, ``writing`` during the final swap) and lists each
  file of the run with its size and sha256. ``result.json`` and ``config.json`` carry the same run id.
- A new run into a folder that holds a complete run (or any run of another verb) is refused before any work unless
  ``overwrite`` is given, and ``overwrite`` replaces only a run of the same verb. A new run is built in a staging
  folder inside ``DIR`` and swapped in only when it is complete, so an interrupted run (``overwrite`` or not) leaves
  the folder as it was. Resuming the *same* run (train, stylize) is not a new run: see ``RunFolder.resume``.
- A folder without a marker (one the user made) is used, but a file stlens did not write is never deleted or
  overwritten. Folders written by stlens 0.1.0 (no marker) still load, with a warning.
- Concurrent writers are excluded with ``fcntl.flock`` on ``DIR/.stlens.lock`` (released when the process dies).

This module imports only the standard library and ``stlens.errors``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stlens.core.damaged import load_json
from stlens.errors import StlensError
from stlens.interrupts import deferred

log = logging.getLogger("stlens")

MARKER = ".stlens-run.json"
LOCK = ".stlens.lock"
STAGING_PREFIX = ".stlens-staging-"
#: files by which a folder written by stlens 0.1.0 (before markers) is recognised, per verb
LEGACY_FILES = {
    "measure": ("result.json", "layers.csv", "units.csv", "config.json", "latents.npz"),
    "train": ("config.json", "metrics.jsonl", "dropout.jsonl"),
    "track": ("track.csv", "track.json"),
    "stylize": ("stylize.json",),
    "visualize": ("summary.json",),
    "demo": ("summary.md", "summary.json", "report.html"),
}
_OWN = (MARKER, LOCK)


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256(path)}


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of ``folder``, None when it has none; a marker that cannot be read raises ``StlensError``."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    advice = "move the folder aside or use another `out` (a damaged marker leaves the run's files unchecked)"
    doc = load_json(path, advice)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict) or "verb" not in doc:
        raise StlensError(f"{path}: not a stlens run marker (damaged, truncated or not written by stlens); {advice}")
    from stlens.files import check_format

    check_format(doc, path)
    return doc


def _write_marker(folder: Path, doc: dict[str, Any]) -> None:
    from stlens.files import versioned, write_json

    write_json(folder / MARKER, versioned(doc))


def legacy_run(folder: Path) -> str | None:
    """The verb of an unmarked folder written by stlens 0.1.0 (its files carry ``stlens_version``), else None."""
    for verb, names in LEGACY_FILES.items():
        for name in names[:1] if verb != "measure" else ("result.json",):
            path = folder / name
            if path.is_file():
                try:
                    doc = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(doc, dict) and ("stlens_version" in doc or "rows" in doc or "targets" in doc):
                    return verb
    return None


def describe(marker: dict[str, Any]) -> str:
    if marker.get("legacy"):
        return f"a stlens {marker['verb']} run written by stlens 0.1.0 (no run marker)"
    return f"a {marker.get('status', '?')} stlens {marker['verb']} run (id {marker.get('run_id', '?')})"


def check_files(folder: str | Path, marker: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """Check that every file the marker lists (or only ``names`` among them) is present with its size and sha256."""
    folder = Path(folder)
    listed = marker["files"]
    for name in names if names is not None else listed:
        if name not in listed:
            raise StlensError(f"{folder / name}: not part of the run recorded in {folder / MARKER}")
        path = folder / name
        entry = listed[name]
        if not path.is_file():
            raise StlensError(f"{path}: missing, but listed in {folder / MARKER} (the run folder is incomplete)")
        if path.stat().st_size != entry.get("size") or sha256(path) != entry.get("sha256"):
            raise StlensError(f"{path}: changed since the run wrote it (size/sha256 differ from {folder / MARKER}: "
                              f"damaged, truncated or edited); it does not belong to run {marker.get('run_id')}: "
                              f"rerun stlens {marker.get('verb', '')} to write it again")


class RunFolder:
    """The owner of one output folder for one run of ``verb``.

    ``claim()`` (before any work) checks the folder, takes the lock and makes a staging folder; the verb writes its
    files into ``staging``; ``commit()`` swaps them into the folder, replacing only files of the earlier run, and
    writes the marker last; ``abandon()`` removes the staging folder. As a context manager, an exception abandons.
    """

    def __init__(self, out: str | Path, verb: str, *, overwrite: bool = False, outputs: Iterable[str] | None = None):
        self.out = Path(out)
        self.verb = verb
        self.overwrite = overwrite
        self.outputs = tuple(outputs if outputs is not None else LEGACY_FILES.get(verb, ()))
        self.run_id = uuid.uuid4().hex[:16]
        self.previous: dict[str, Any] | None = None
        self.staging: Path | None = None
        self._lock_fd: int | None = None
        self._created = False

    # -- claiming -------------------------------------------------------------------------------------------------

    def claim(self) -> RunFolder:
        self._make_folder()
        self._lock()
        try:
            self.previous = self._previous_run()
            self._refuse_if_taken()
            self._refuse_foreign(self.outputs)
            self._remove_stale_staging()
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + self.run_id + "-", dir=self.out))
        except BaseException:
            self.release()
            raise
        return self

    def _make_folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise StlensError(f"`out` {self.out}: exists and is not a folder")
        try:
            self._created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StlensError(f"`out` {self.out}: cannot create the folder ({exc.strerror or exc})") from exc
        if not os.access(self.out, os.W_OK | os.X_OK):
            raise StlensError(f"`out` {self.out}: the folder is not writable")

    def _lock(self) -> None:
        path = self.out / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StlensError(f"`out` {self.out}: cannot create the lock file ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StlensError(f"`out` {self.out}: another stlens process is writing this folder; wait for it or "
                              f"use another `out`") from None
        self._lock_fd = fd

    def _previous_run(self) -> dict[str, Any] | None:
        marker = read_marker(self.out)
        if marker is not None:
            return marker
        verb = legacy_run(self.out)
        if verb is None:
            return None
        names = [n for n in LEGACY_FILES[verb] if (self.out / n).is_file()]
        return {"verb": verb, "run_id": None, "status": "complete", "legacy": True,
                "files": {n: None for n in names}}

    def _refuse_if_taken(self) -> None:
        old = self.previous
        if old is None:
            return
        what = describe(old)
        if old["verb"] != self.verb:
            raise StlensError(f"`out` {self.out} holds {what}; a {self.verb} run cannot replace it (`overwrite` "
                              f"replaces only a run of the same verb): use another `out`")
        if old.get("status") in ("complete", "writing", "running") and not self.overwrite:
            raise StlensError(f"`out` {self.out} already holds {what}; use another `out`, or `overwrite` to "
                              f"replace it (the old run stays until the new one is complete)")

    def _refuse_foreign(self, names: Iterable[str]) -> None:
        """Before any work: a file the run will write exists and was not written by stlens."""
        old_files = set((self.previous or {}).get("files") or {})
        foreign = [n for n in names if (self.out / n).exists() and n not in old_files]
        if foreign:
            raise StlensError(f"`out` {self.out}: {', '.join(foreign)} exist and were not written by stlens; they are "
                              f"left as they are: use another `out`")

    def _remove_stale_staging(self) -> None:
        """Staging folders of runs that died (we hold the lock, so none is in use)."""
        for path in self.out.glob(STAGING_PREFIX + "*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)

    # -- committing -----------------------------------------------------------------------------------------------

    def commit(self, status: str = "complete", info: dict[str, Any] | None = None) -> Path:
        """Swap the staged files into the folder and write the marker; returns the folder."""
        if self.staging is None:
            raise RuntimeError("commit() before claim()")
        new = sorted(str(p.relative_to(self.staging)) for p in self.staging.rglob("*") if p.is_file())
        self._check_foreign(new)
        entries = {name: file_entry(self.staging / name) for name in new}
        old_files = set((self.previous or {}).get("files") or {})
        marker = {"verb": self.verb, "run_id": self.run_id, "status": status,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": entries, **(info or {})}
        with deferred():
            _write_marker(self.out, marker | {"status": "writing", "files": {}})
            for name in new:
                target = self.out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / name, target)
            for name in sorted(old_files - set(new)):
                self._remove_old(name)
            _write_marker(self.out, marker)
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        self.release()
        return self.out

    def _check_foreign(self, new: list[str]) -> None:
        """A staged file would replace a file this run's predecessor did not write: keep the new run apart."""
        old_files = set((self.previous or {}).get("files") or {})
        foreign = [n for n in new if (self.out / n).exists() and n not in old_files]
        if foreign:
            kept = self.out / f"stlens-{self.verb}-{self.run_id}"
            self.staging.rename(kept)
            self.staging = None
            self.release()
            raise StlensError(f"`out` {self.out}: {', '.join(foreign[:3])} exist and were not written by stlens; "
                              f"the new run was kept complete in {kept}")

    def _remove_old(self, name: str) -> None:
        path = self.out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
        parent = path.parent
        while parent != self.out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    # -- resumable verbs ------------------------------------------------------------------------------------------

    def resume(self) -> bool:
        """For verbs that write in place and resume (train, stylize): claim the folder without staging. Returns True
        when it holds an earlier run of the same verb (to be resumed); refuses another verb's run. With
        ``overwrite`` a verb whose marker lists all its files (train) has them removed first (``_clear``) and
        starts anew (False)."""
        self._make_folder()
        self._lock()
        try:
            self.previous = self._previous_run()
            old = self.previous
            if old is not None and old["verb"] != self.verb:
                what = describe(old)
                raise StlensError(f"`out` {self.out} holds {what}; a {self.verb} run cannot use it: use another `out`")
            if old is not None and old.get("legacy"):
                log.warning("%s was written by stlens 0.1.0 (no run marker); resuming it and marking it now", self.out)
            if old is not None and self.overwrite and self.clears:
                self._clear(old)
                self.previous = old = None
            if old is not None and old.get("run_id"):
                self.run_id = old["run_id"]
        except BaseException:
            self.release()
            raise
        return old is not None

    @property
    def clears(self) -> bool:
        """Whether ``overwrite`` in ``resume`` removes the earlier run here (train: its marker lists every file);
        stylize removes its own video folders itself."""
        return self.verb == "train"

    def _clear(self, old: dict[str, Any]) -> None:
        """Remove the files the earlier run's marker lists (regular files inside the folder only), the folders they
        leave empty, and the marker."""
        if old.get("legacy"):
            raise StlensError(f"`out` {self.out} was written by stlens 0.1.0 (no run marker), so `overwrite` cannot "
                              f"tell its files from others: remove them yourself or use another `out`")
        root = self.out.resolve()
        parents: set[Path] = set()
        for name in old.get("files", {}):
            path = self.out / name
            if path.is_symlink() or not path.is_file() or root not in path.resolve().parents:
                continue
            path.unlink()
            parents.update(p for p in path.parents if root in p.resolve().parents)
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
        (self.out / MARKER).unlink(missing_ok=True)

    def mark(self, names: Iterable[str], status: str = "running", info: dict[str, Any] | None = None) -> None:
        """Record the run in place (resumable verbs): the marker lists ``names`` (paths relative to the folder)."""
        entries = {name: file_entry(self.out / name) for name in sorted(set(names)) if (self.out / name).is_file()}
        _write_marker(self.out, {"verb": self.verb, "run_id": self.run_id, "status": status,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": entries, **(info or {})})

    # -- releasing ------------------------------------------------------------------------------------------------

    def abandon(self) -> None:
        """Drop the staged files (an interrupted or failed run); the folder keeps what it held."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        self.release()

    def release(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        if self._created and set(os.listdir(self.out)) <= {LOCK}:
            (self.out / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.out.rmdir()
        os.close(fd)

    def __enter__(self) -> RunFolder:
        return self.claim() if self.staging is None else self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abandon()


def claimed(out: str | Path | RunFolder, verb: str, *, overwrite: bool = False,
            outputs: Iterable[str] | None = None) -> RunFolder:
    """``out`` as a claimed ``RunFolder``: one the verb claimed before its work as it is, one not yet claimed now
    claimed, a path a new ``RunFolder`` of ``verb`` claimed now (a result's ``save``)."""
    folder = out if isinstance(out, RunFolder) else RunFolder(out, verb, overwrite=overwrite, outputs=outputs)
    if folder.staging is None:
        folder.claim()
    return folder


@contextlib.contextmanager
def new_run(out: str | Path, verb: str, *, overwrite: bool = False) -> Iterator[RunFolder]:
    """Claim ``out`` for a new run of ``verb`` (before any work); the block writes into ``run.staging``; a normal exit
    commits, an exception (an interrupt included) abandons the staged files and leaves ``out`` as it was."""
    run = RunFolder(out, verb, overwrite=overwrite).claim()
    try:
        yield run
    except BaseException:
        run.abandon()
        raise
    if run.staging is not None:
        run.commit()


def fresh_sibling(out: str | Path, suffix: str) -> Path:
    """``OUT<suffix>``, or ``OUT<suffix>-2``, ``-3``… : the first that does not exist (for partial results)."""
    out = Path(out)
    candidate = out.with_name(out.name + suffix)
    n = 2
    while candidate.exists():
        candidate = out.with_name(f"{out.name}{suffix}-{n}")
        n += 1
    return candidate


def own_file(path: str | Path, signature: str, what: str) -> None:
    """Refuse to overwrite ``path`` unless it does not exist or holds ``signature`` (a file stlens wrote)."""
    path = Path(path)
    if path.is_dir():
        raise StlensError(f"`out` {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StlensError(f"`out` {path}: cannot create its folder ({exc.strerror or exc})") from exc
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StlensError(f"`out` {path}: its folder {path.parent} is not writable")
    if not path.exists():
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError as exc:
        raise StlensError(f"`out` {path}: cannot read ({exc.strerror or exc})") from exc
    if signature not in head:
        raise StlensError(f"`out` {path}: exists and is not a {what} written by stlens; it is left as it is: "
                          f"use another `out`")


def read_run_document(folder: Path, verb: str, document: str, table: str | None, advice: str) -> tuple[dict, dict]:
    """(run marker, JSON document) of a complete ``verb`` run folder whose ``document`` and ``table`` (if not None)
    are the files the run wrote (size and sha256), the document of a format this stlens reads and of the run in the
    marker; anything else raises a ``StlensError`` naming the folder or the file (``advice``: what to do about a damaged
    document)."""
    marker = read_marker(folder)
    if marker is None:
        raise StlensError(f"{folder}: no run marker ({MARKER}); not a folder written by stlens {verb}, or copied "
                          f"without its marker")
    if marker.get("verb") != verb:
        raise StlensError(f"{folder}: holds {describe(marker)}, not {'an' if verb[0] in 'aeiou' else 'a'} {verb} run")
    if marker.get("status") != "complete":
        raise StlensError(f"{folder}: the run was not completely written (status {marker.get('status')!r}); run it "
                          f"again")
    check_files(folder, marker, [document] if table is None else [document, table])
    from stlens.files import read_versioned

    doc = read_versioned(folder / document, f"stlens {document}", advice)
    if doc.get("run_id") != marker.get("run_id"):
        raise StlensError(f"{folder / document}: belongs to run {doc.get('run_id')!r}, the folder holds run "
                          f"{marker.get('run_id')!r}")
    return marker, doc
