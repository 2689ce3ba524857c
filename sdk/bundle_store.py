"""Bundles installed on a device: atomic install with a parity canary, rollback, version pinning.

A phone or kiosk that downloads a new model must never run a tampered one, crash on a bad
file, or end up with none. :class:`BundleStore` keeps each installed bundle in its own
folder and names the one in service in a small pointer file that is replaced atomically::

    ROOT/
      state.json                      {"current": "v1733500000-3f2a9c1b7d6e", "previous": [...]}
      versions/v1733500000-3f2a9c1b7d6e/   manifest.json, manifest.sig, model files, canary.json
      versions/v1733400000-.../           kept for rollback (``keep`` versions in all)
      .lock                            one installer at a time, across processes

:meth:`BundleStore.install` copies the new bundle into a private staging folder, verifies
it there (schema, every sha256, the signature when the store has ``trusted_keys``),
refuses a lower ``bundle_version`` than the one in service (a replayed old bundle), runs
the bundle's parity canary through the device's runtime, and only then renames the folder
into ``versions/`` and replaces ``state.json``. The rename of ``state.json`` is the commit:
a crash or ``kill -9`` at any earlier point leaves the previous bundle in service, and
leftovers are cleaned by the next install.

Example:
    >>> store = BundleStore("/data/kdaliens", trusted_keys=["signing.pub"])   # doctest: +SKIP
    >>> store.install("downloads/bundle")         # or the bytes of BundleStore.pack(...)  # doctest: +SKIP
    >>> ranker = Ranker.load(store.current(), trusted_keys=["signing.pub"])  # doctest: +SKIP
    >>> store.rollback()                          # back to the bundle before  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .backends import backend_for_target, get_backend
from .bundle import MAX_ARTIFACT_BYTES, MAX_SIGNATURE_BYTES, Bundle
from .canary import run_canary
from .errors import BundleError, InputError, KdaliensError
from .fileio import atomic_write, fsync_dir, read_or_raise, read_regular
from .manifest import ARTIFACT_NAME, MAX_ARTIFACTS, MAX_MANIFEST_BYTES, parse_manifest
from .names import BackendName
from .signing import SIGNATURE_FILE, public_keys
from .stores import StoreError

STATE_FILE = "state.json"
VERSIONS = "versions"
_STAGING = ".staging-"
_NAME = re.compile(r"v[0-9]{1,19}-[0-9a-f]{12}")
MAX_ARCHIVE_BYTES = MAX_ARTIFACT_BYTES


class BundleStore:
    """The bundles installed on this device, one of them in service.

    Args:
        root: the store's folder (created if missing).
        trusted_keys: ``signing.pub`` paths or key bytes. When given, every install must be
            signed by one of them. When None, unsigned bundles install (each load then
            warns in ``meta``).
        backend: the runtime that runs the canary (``"auto"``: the bundle's own).
        keep: how many bundles to keep, the one in service included (at least 2, so one
            :meth:`rollback` is always possible).

    Raises:
        InputError: bad arguments. StoreError: ``root`` cannot be created or written.
    """

    def __init__(self, root: str | os.PathLike, trusted_keys: Iterable[str | os.PathLike | bytes] | None = None,
                 backend: str = "auto", keep: int = 3):
        if not isinstance(root, (str, os.PathLike)):
            raise InputError(f"root must be a folder path, got {type(root).__name__}")
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 2:
            raise InputError(f"keep must be an int >= 2, got {keep!r}")
        self.root = Path(root)
        self.trusted_keys = None if trusted_keys is None else list(public_keys(trusted_keys).values())
        self.backend = backend if backend == "auto" else BackendName.parse(backend, "backend")
        self.keep = keep
        try:
            (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot create the bundle store ({e.strerror or e})") from None

    # ------------------------------------------------------------------ reading
    def current(self) -> Path | None:
        """The folder of the bundle in service (pass it to ``Ranker.load``), or None when none is installed.

        Raises:
            StoreError: ``state.json`` is unreadable, or names a folder that is gone.
        """
        state = self._state()
        if state["current"] is None:
            return None
        path = self.root / VERSIONS / state["current"]
        if not path.is_dir():
            raise StoreError(f"{self.root}: the bundle in service ({state['current']}) is missing; "
                             "the store was changed by hand")
        return path

    def versions(self) -> list[dict[str, Any]]:
        """The bundles kept, the one in service first: ``{"name", "bundle_version", "path", "current"}``."""
        state = self._state()
        names = [n for n in [state["current"], *state["previous"]]
                 if n is not None and (self.root / VERSIONS / n).is_dir()]
        return [{"name": n, "bundle_version": int(n[1:].split("-")[0]), "path": self.root / VERSIONS / n,
                 "current": i == 0} for i, n in enumerate(names)]

    def _state(self) -> dict[str, Any]:
        try:
            raw = read_regular(self.root / STATE_FILE, 1 << 20)
        except FileNotFoundError:
            return {"current": None, "previous": []}
        except OSError as e:
            raise StoreError(f"{self.root / STATE_FILE}: unreadable ({e.strerror or e})") from None
        try:
            state = json.loads(raw.decode("utf-8"))
            names = [state["current"], *state["previous"]]
            if not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names):
                raise ValueError("bad version name")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{self.root / STATE_FILE}: corrupt ({str(e)[:100]})") from None
        return {"current": state["current"], "previous": list(state["previous"])}

    # ------------------------------------------------------------------ install
    def install(self, source: str | os.PathLike | bytes, allow_downgrade: bool = False,
                threads: int = 1) -> Bundle:
        """Verify a bundle, run its parity canary on this device, and put it in service atomically.

        Args:
            source: a bundle folder, a ``.zip`` of one (:meth:`pack`), or the bytes of that zip.
            allow_downgrade: install even if its ``bundle_version`` is lower than the one in
                service (by default a lower version is refused: a replayed old bundle).
            threads: intra-op threads for the canary run.

        Returns:
            The installed :class:`Bundle`, now :meth:`current`. Installing the bundle that is
            already in service changes nothing and returns it.

        Raises:
            BundleError: the bundle is malformed, fails its hashes or signature (a tampered
                manifest, an unknown key), is older than the one in service, or its canary
                fails on this device. The bundle in service stays.
            BackendUnavailable: the runtime for the bundle is not installed.
            StoreError: the store cannot be written (full disk, permissions).
        """
        with self._locked():
            self._clean()
            staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=self.root))
            try:
                bundle = self._stage(source, staging)
                name = _version_name(bundle)
                state = self._state()
                if state["current"] == name:
                    shutil.rmtree(staging, ignore_errors=True)
                    return Bundle.load(self.root / VERSIONS / name, trusted_keys=self.trusted_keys)
                self._check_version(bundle, state, allow_downgrade)
                self._canary(bundle, threads)
                final = self.root / VERSIONS / name
                if final.exists():  # left by an install killed before its commit, or rolled back from
                    shutil.rmtree(final)
                os.replace(staging, final)
                fsync_dir(final.parent)
                previous = [n for n in [state["current"], *state["previous"]] if n is not None and n != name]
                self._commit({"current": name, "previous": previous[:self.keep - 1]}, state["current"])
                return replace(bundle, path=final)
            except OSError as e:
                raise StoreError(f"{self.root}: cannot install ({e.strerror or e}); the bundle in service stays"
                                 ) from None
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def rollback(self) -> Path:
        """Put the bundle that was in service before the current one back in service.

        The current one is dropped (a second rollback goes one further back).

        Returns:
            The folder now in service.

        Raises:
            BundleError: there is no earlier bundle to go back to.
        """
        with self._locked():
            state = self._state()
            previous = [n for n in state["previous"] if (self.root / VERSIONS / n).is_dir()]
            if not previous:
                raise BundleError(f"{self.root}: no earlier bundle to roll back to")
            try:
                self._commit({"current": previous[0], "previous": previous[1:]}, state["current"])
            except OSError as e:
                raise StoreError(f"{self.root}: cannot roll back ({e.strerror or e})") from None
            return self.root / VERSIONS / previous[0]

    @staticmethod
    def pack(bundle: str | os.PathLike) -> bytes:
        """The bytes of a zip of a bundle folder (``manifest.json``, ``manifest.sig`` and the
        artifacts), to ship as one download and pass to :meth:`install`.

        Raises:
            BundleError: the folder is not a valid bundle.
        """
        b = Bundle.load(bundle)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name in ("manifest.json", SIGNATURE_FILE):
                if (b.path / name).is_file():
                    z.writestr(name, read_regular(b.path / name, MAX_MANIFEST_BYTES))
            for name, data in b.blobs.items():
                z.writestr(name, data)
        return out.getvalue()

    # ------------------------------------------------------------------ steps
    def _stage(self, source: Any, staging: Path) -> Bundle:
        """Copy ``source``'s bundle files into ``staging`` and verify the copy."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            files = _zip_reader(bytes(source), "the bundle archive given as bytes")
        elif isinstance(source, (str, os.PathLike)):
            src = Path(source)
            if src.is_dir():
                files = _folder_reader(src)
            elif src.is_file():
                data = read_or_raise(lambda: read_regular(src, MAX_ARCHIVE_BYTES), src, "bundle archive", BundleError)
                files = _zip_reader(data, str(src))
            else:
                raise BundleError(f"{src}: no bundle folder or archive there")
        else:
            raise InputError(f"source must be a bundle folder, a zip path or zip bytes, got {type(source).__name__}")
        raw = files("manifest.json", MAX_MANIFEST_BYTES)
        if raw is None:
            raise BundleError(f"{source if not isinstance(source, bytes) else 'archive'}: no manifest.json")
        manifest, problem = parse_manifest(raw)
        arts = manifest.get("artifacts") if isinstance(manifest, dict) else None
        if problem or not isinstance(arts, dict) or len(arts) > MAX_ARTIFACTS:
            raise BundleError(f"manifest.json: {problem or 'no artifacts listed'}")
        wanted = ["manifest.json", SIGNATURE_FILE, *[n for n in arts if isinstance(n, str)
                                                     and ARTIFACT_NAME.fullmatch(n) and n != SIGNATURE_FILE]]
        for name in wanted:
            data = raw if name == "manifest.json" else files(name, MAX_SIGNATURE_BYTES if name == SIGNATURE_FILE
                                                              else MAX_ARTIFACT_BYTES)
            if data is None:
                continue  # a missing artifact is reported by the verification below
            with open(staging / name, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(staging, 0o755)
        return Bundle.load(staging, trusted_keys=self.trusted_keys)

    def _check_version(self, bundle: Bundle, state: dict[str, Any], allow_downgrade: bool) -> None:
        if state["current"] is None or allow_downgrade:
            return
        serving = int(state["current"][1:].split("-")[0])
        if bundle.bundle_version < serving:
            raise BundleError(f"bundle_version {bundle.bundle_version} is older than the one in service "
                              f"({serving}); refusing a downgrade (allow_downgrade=True to install it anyway)")
        if bundle.bundle_version == serving:
            raise BundleError(f"bundle_version {serving} is already in service with other content; a new "
                              "bundle needs a higher version")

    def _canary(self, bundle: Bundle, threads: int) -> None:
        own = backend_for_target(bundle.target)
        name = own if self.backend == "auto" else self.backend
        if name != own:
            raise InputError(f"the bundle targets {bundle.target.value!r}, which {own!r} runs, not {name!r}")
        try:
            backend = get_backend(name)(bundle.model_path, bundle.manifest, threads=threads,
                                        model_bytes=bundle.model_bytes)
        except KdaliensError:
            raise
        except Exception as e:  # the runtime refused the model
            raise BundleError(f"the {name} runtime cannot load this model ({type(e).__name__}: {str(e)[:200]})"
                              ) from None
        canary = bundle.manifest.get("canary")
        if canary is None:
            raise BundleError("the bundle has no parity canary (exported by an older kdaliens); re-export it")
        run_canary(bundle.artifact(canary), backend.run, f"{bundle.path.name}/{canary}")

    def _commit(self, state: dict[str, Any], serving: str | None) -> None:
        """Replace ``state.json`` with ``state``: the commit point.

        Folders the new state no longer names are removed first, except ``serving`` (the
        bundle in service until the commit), which goes after it: the commit is then the
        last step of an install, and a rollback that finds an older folder gone skips it."""
        kept = {state["current"], *state["previous"]}
        for d in (self.root / VERSIONS).iterdir():
            if d.name not in kept and d.name != serving:
                shutil.rmtree(d, ignore_errors=True)
        atomic_write(self.root / STATE_FILE, json.dumps({**state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                                                        indent=1) + "\n")
        fsync_dir(self.root)
        if serving is not None and serving not in kept:
            shutil.rmtree(self.root / VERSIONS / serving, ignore_errors=True)

    def _clean(self) -> None:
        """Remove staging folders of installs that were killed (only the lock holder installs)."""
        for d in self.root.glob(_STAGING + "*"):
            shutil.rmtree(d, ignore_errors=True)
        for d in self.root.glob(f".{STATE_FILE}.*.tmp"):
            d.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # pragma: no cover  (Windows: one process per store)
            yield
            return
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot open the store's lock ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _version_name(bundle: Bundle) -> str:
    """``v<bundle_version>-<first 12 hex digits of the manifest's sha256>``."""
    digest = hashlib.sha256(json.dumps(bundle.manifest, sort_keys=True).encode()).hexdigest()[:12]
    return f"v{bundle.bundle_version}-{digest}"


def _folder_reader(src: Path):
    def read(name: str, limit: int) -> bytes | None:
        if not os.path.lexists(src / name):
            return None
        return read_or_raise(lambda: read_regular(src / name, limit), src / name, "bundle file", BundleError)
    return read


def _zip_reader(data: bytes, where: str):
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = z.infolist()
    except Exception as e:  # noqa: BLE001 - whatever a damaged download makes zipfile raise
        raise BundleError(f"{where}: not a bundle zip ({type(e).__name__}: {str(e)[:100]})") from None
    if len(infos) > MAX_ARTIFACTS + 2:
        raise BundleError(f"{where}: {len(infos)} entries, over the {MAX_ARTIFACTS + 2} a bundle may hold")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        ok = (info.filename in ("manifest.json", SIGNATURE_FILE) or ARTIFACT_NAME.fullmatch(info.filename)) \
            and not info.is_dir() and (info.external_attr >> 16) & 0o170000 in (0, 0o100000)
        if not ok or info.filename in members:
            raise BundleError(f"{where}: entry {info.filename[:80]!r} is not a plain bundle file name "
                              "(no folders, links or repeats)")
        members[info.filename] = info

    def read(name: str, limit: int) -> bytes | None:
        info = members.get(name)
        if info is None:
            return None
        if info.file_size > limit:
            raise BundleError(f"{where}: {name} is {info.file_size:,} bytes, over the {limit:,}-byte limit")
        try:
            with z.open(info) as f:
                out = f.read(limit + 1)
        except Exception as e:  # noqa: BLE001 - bad CRC, zlib errors, encrypted or unknown compression
            raise BundleError(f"{where}: {name} cannot be unpacked ({type(e).__name__}: {str(e)[:100]})") from None
        if len(out) > limit:
            raise BundleError(f"{where}: {name} unpacks past the {limit:,}-byte limit")
        return out
    return read
