"""Versioned model artefacts on disk: `<data_dir>/models/lead-scoring/`.

Each version is `v<N>.skops` (the fitted pipeline, in skops's format, which rebuilds
objects from an allowlist of types instead of running pickle's arbitrary code) and
`v<N>.json` (metrics, feature names, sizes, creation time and the artefact's SHA-256).
The file `active` names the version that scores new leads; without it the points model
does. The file `claimed` lists every version number ever given out, one a line: a number
is never given twice, even after its files are deleted (leads and MLflow runs name models
by it). Loading checks the checksum (a corrupted or swapped file is refused) and that the
artefact holds only the types a lead-scoring pipeline needs (an altered file cannot
smuggle other code in). A refused active model is never loaded: the operator activates
another version or the points model (`cauce leads model activate`).

The files are the owner's only (0600, the directories Cauce makes 0700): a model is
trained on leads, and its artefact can give some of them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sklearn  # type: ignore[import-untyped]
import skops  # type: ignore[import-untyped]
import skops.io as sio  # type: ignore[import-untyped]

from cauce.core.db.base import utcnow
from cauce.core.db.engine import create_private, private_dir
from cauce.leads.learned.errors import ModelArtefactInvalid, ModelStoreUnavailable
from cauce.leads.learned.model import LearnedModel
from cauce.leads.learned.training import TrainingReport
from cauce.leads.scoring import ACTIVE_POINTER, MODEL_STORE_PATH, read_active_version

STORE_PATH = MODEL_STORE_PATH
ACTIVE_FILE = ACTIVE_POINTER
CLAIMED_FILE = "claimed"
# Types skops does not trust by default but a calibrated pipeline legitimately contains.
TRUSTED_TYPES = frozenset(
    {"sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"}
)
CLASSIFIER = "CalibratedClassifierCV(LogisticRegression, method=sigmoid, ensemble=False)"
_ARTEFACT = re.compile(r"^v([1-9][0-9]*)\.skops$")
_POINTER = re.compile(r"^v([1-9][0-9]*)$")


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (0600: `mkstemp`'s)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ModelStore:
    """The versions of the learned lead-scoring model and which one is active."""

    def __init__(self, root: Path, *, now: Callable[[], datetime] = utcnow) -> None:
        self.root = root
        self._now = now

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, now: Callable[[], datetime] = utcnow) -> ModelStore:
        """The store inside Cauce's data directory."""
        return cls(data_dir / STORE_PATH, now=now)

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """File-system errors as what they are: this store's, naming its directory."""
        try:
            yield
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ModelStoreUnavailable(
                f"cannot use the lead-scoring model store {self.root}: {exc.strerror or exc}{where}"
            ) from exc

    def artefact_path(self, version: int) -> Path:
        """Where version N's pipeline is."""
        return self.root / f"v{version}.skops"

    def metadata_path(self, version: int) -> Path:
        """Where version N's metadata is."""
        return self.root / f"v{version}.json"

    def versions(self) -> list[int]:
        """Saved versions (those with both files), oldest first."""
        with self._io():
            if not self.root.is_dir():
                return []
            found = []
            for path in self.root.iterdir():
                match = _ARTEFACT.match(path.name)
                if match and self.metadata_path(int(match.group(1))).exists():
                    found.append(int(match.group(1)))
        return sorted(found)

    def _claimed_before(self) -> int:
        """The highest version number ever given out (0: none), whether or not its files
        are still there."""
        try:
            text = (self.root / CLAIMED_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        return max((int(m.group(1)) for w in text.split() if (m := _POINTER.match(w))), default=0)

    def _record_claim(self, version: int) -> None:
        """Add `version` to the numbers given out. Appending (one short write) needs no
        lock: rival trainers' lines all land, and the highest one counts."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(self.root / CLAIMED_FILE, flags, 0o600), "ab") as handle:
            handle.write(f"v{version}\n".encode())
            handle.flush()
            os.fsync(handle.fileno())

    def _claim(self, data: bytes) -> int:
        """Write the artefact under a version number never given out before (not even to
        a version whose files were deleted since), even with rival trainers."""
        private_dir(self.root)
        taken = [int(m.group(1)) for p in self.root.iterdir() if (m := _ARTEFACT.match(p.name))]
        version = max(*taken, self._claimed_before(), 0) + 1
        while True:
            # Recorded first: no file ever holds a number the record lacks. Exclusive
            # creation: two trainers never write the same version. Readers only list
            # versions whose metadata exists, and that is written after this file.
            self._record_claim(version)
            try:
                with os.fdopen(create_private(self.artefact_path(version)), "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except FileExistsError:
                version += 1
            else:
                return version

    def save(self, report: TrainingReport) -> TrainingReport:
        """Store the report's model as the next version; the report comes back with it."""
        data = sio.dumps(report.model.pipeline)
        with self._io():
            version = self._claim(data)
        model = report.model.with_version(version)
        metadata: dict[str, Any] = {
            "version": version,
            "name": model.name,
            "created_at": self._now().isoformat(),
            "artefact": self.artefact_path(version).name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "classifier": CLASSIFIER,
            "metrics": report.metrics(),
            "beats_points": report.beats_points,
            "compared_with": report.compared_with,
            "beats_active": report.beats_active,
            "margin": report.margin,
            "n_train": report.n_train,
            "n_test": report.n_test,
            "n_won": report.n_won,
            "n_lost": report.n_lost,
            "seed": report.seed,
            "test_size": report.test_size,
            # The leads it never saw, for the next run's comparison (`training.train`).
            "held_out_below": report.held_out_below,
            # The points rules its figures were measured against (`PointsRules`).
            "points_rules": report.points_rules.as_dict() if report.points_rules else None,
            "feature_names": list(model.feature_names),
            "top_features": [fw.as_dict() for fw in report.top_features],
            "versions": {"scikit-learn": sklearn.__version__, "skops": skops.__version__},
        }
        body = json.dumps(metadata, indent=2, ensure_ascii=False).encode() + b"\n"
        with self._io():
            _write_atomically(self.metadata_path(version), body)
        return replace(report, model=model, version=version)

    def metadata(self, version: int) -> dict[str, Any]:
        """Version N's metadata."""
        with self._io():
            try:
                raw = self.metadata_path(version).read_bytes()
            except FileNotFoundError:
                raise ModelArtefactInvalid(f"model version {version} does not exist") from None
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise ModelArtefactInvalid(f"model v{version} metadata is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ModelArtefactInvalid(f"model v{version} metadata is not an object")
        return loaded

    def load(self, version: int) -> LearnedModel:
        """Version N, after checking its checksum and the types it contains."""
        metadata = self.metadata(version)
        with self._io():
            try:
                data = self.artefact_path(version).read_bytes()
            except FileNotFoundError:
                raise ModelArtefactInvalid(f"model v{version} artefact is missing") from None
        expected = str(metadata.get("sha256", ""))
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected):
            raise ModelArtefactInvalid(
                f"model v{version} artefact does not match its recorded SHA-256 "
                "(altered or damaged)"
            )
        try:
            untrusted = set(sio.get_untrusted_types(data=data))
            if unexpected := sorted(untrusted - TRUSTED_TYPES):
                raise ModelArtefactInvalid(
                    f"model v{version} holds unexpected types: {', '.join(unexpected)}"
                )
            pipeline = sio.loads(data, trusted=sorted(untrusted))
        except ModelArtefactInvalid:
            raise
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise ModelArtefactInvalid(f"model v{version} cannot be read: {exc}") from exc
        model = LearnedModel(pipeline, version=version)
        if list(model.feature_names) != metadata.get("feature_names"):
            raise ModelArtefactInvalid(f"model v{version} features disagree with its metadata")
        return model

    def active_version(self) -> int | None:
        """The version that scores new leads (None: the points model does)."""
        with self._io():
            try:
                # The reading a running process compares its own model with (`scoring`).
                return read_active_version(self.root)
            except ValueError as exc:
                raise ModelArtefactInvalid(str(exc)) from None

    def activate(self, version: int) -> None:
        """Make version N the one that scores new leads (it must load cleanly first)."""
        self.load(version)
        with self._io():
            _write_atomically(self.root / ACTIVE_FILE, f"v{version}\n".encode())

    def deactivate(self) -> None:
        """Score new leads with the points model again (the saved versions stay)."""
        with self._io():
            (self.root / ACTIVE_FILE).unlink(missing_ok=True)

    def held_out_below(self, version: int) -> float | None:
        """Version N's held-out share by lead id (None: a random split, or none recorded)."""
        value = self.metadata(version).get("held_out_below")
        return float(value) if isinstance(value, int | float) else None

    def load_active(self) -> LearnedModel | None:
        """The active model, or None when none was ever activated."""
        version = self.active_version()
        return None if version is None else self.load(version)

    def recovery_hint(self, *, refused: int | None = None) -> str:
        """How to get back to a model that loads, for messages about a refused one."""
        try:
            others = [v for v in self.versions() if v != refused]
        except ModelStoreUnavailable:
            others = []
        saved = f"; saved: {', '.join(f'v{v}' for v in others[-5:])}" if others else ""
        return (
            f"activate another saved version (`cauce leads model activate N`{saved}) or go "
            "back to the points model (`cauce leads model activate points`)"
        )


def load_active(data_dir: Path) -> LearnedModel | None:
    """The active learned model in `data_dir`, or None (score with the points model).

    Raises `ModelArtefactInvalid` when the active model exists but fails its checks:
    a tampered model must stop start-up, not silently score leads. Its message names the
    problem and how to recover, in one line.
    """
    store = ModelStore.for_data_dir(data_dir)
    try:
        return store.load_active()
    except ModelArtefactInvalid as exc:
        try:
            refused = store.active_version()
        except ModelArtefactInvalid:
            refused = None
        problem = " ".join(exc.detail.split())  # one line, whatever the reader said
        raise ModelArtefactInvalid(
            f"the active lead-scoring model in {store.root} is refused: {problem}. "
            f"To recover, {store.recovery_hint(refused=refused)}"
        ) from exc
