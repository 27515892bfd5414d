"""One clip's extraction stages: hash -> probe -> decode -> transcript -> text/audio/visual.

Each clip is one task (``run_clip``) that reads and writes only the content-addressed cache, so a
task can run in this process, in a joblib/loky worker or on a dask worker with the same result.
A task never raises for a bad clip: it returns a ``Record`` whose ``error`` says the stage, the
reason code and a one-line message. Only a storage failure (disk full, read-only output) stops
the whole run, because every later clip would fail the same way.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from msa.extractors.base import Extractor, Features, Transcript

from msa.pipeline.extract.assemble import Entry
from msa.pipeline.extract.cache import FeatureCache
from msa.core.errors import ExtractionError, MediaError, MsaError
from msa.core.hashing import file_sha256, json_sha256
from msa.pipeline.extract.sources import Item, read_sidecar

log = logging.getLogger("msa.stages")

STAGES = ("hash", "probe", "decode", "transcript", "text", "audio", "visual")
PROBE_NAME, PROBE_VERSION = "probe", "1"
_STREAM = {"audio": ("has_audio", "no_audio"), "visual": ("has_video", "no_video"), "asr": ("has_audio", "no_audio")}
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class StorageError(MsaError):
    """The output folder cannot take more data: the run stops, finished clips stay cached."""

    reason = "storage"


@dataclass(frozen=True)
class ExtractorRef:
    """A picklable recipe for an extractor instance: its class and frozen config."""

    modality: str
    cls: type
    config: Any

    def build(self) -> Extractor:
        return self.cls(self.config)


@dataclass(frozen=True)
class Plan:
    """Everything a task needs; sent to every worker (small, picklable)."""

    out_dir: str
    extractors: tuple[ExtractorRef, ...]  # text / audio / visual, in that order
    specs: dict[str, dict[str, Any]]  # modality -> FeatureSpec.to_dict() (with spec_hash)
    asr: ExtractorRef | None = None
    limit_seconds: float | None = None
    missing: str = "error"  # "error": a missing stream fails the clip; "empty": zero-length features
    align: bool = False  # word-level alignment at assembly: needs word timings (ASR)
    torch_threads: int = 0  # cap per worker (0: leave as is)
    stop_file: str = ""
    main_pid: int = 0
    # the visual stage runs on a second thread while the transcript is computed (a core to spare)
    overlap: bool = False

    def spec_hash(self, modality: str) -> str:
        return str(self.specs[modality]["spec_hash"])


@dataclass
class Record:
    """What one task did for one clip."""

    index: int
    item: Item
    status: str = "cached"  # extracted | cached | failed | busy | skipped | todo
    seconds: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0
    entry: Entry | None = None
    error: dict[str, str] | None = None
    flags: tuple[str, ...] = ()
    asr_spec: dict[str, Any] | None = None
    # the decoded Clip, only when run_clip is asked to keep it (msa-predict's affect readouts reuse its audio)
    clip: Any = field(default=None, repr=False, compare=False)


class _TextClip:
    """What a text extractor reads from a clip; avoids opening the media for text-only work."""

    def __init__(self, clip_id: str, transcript: Transcript) -> None:
        self.clip_id, self.transcript = clip_id, transcript


_local = threading.local()


def _instance(ref: ExtractorRef) -> Extractor:
    """One extractor instance per (class, config) per worker thread: models load once per worker."""
    cache = getattr(_local, "instances", None)
    if cache is None:
        cache = _local.instances = {}
    key = (ref.cls.__module__, ref.cls.__qualname__, repr(ref.config))
    if key not in cache:
        cache[key] = ref.build()
    return cache[key]


def preload(plan: Plan) -> None:
    """Build this thread's extractor instances and let each import its backend (``Extractor.preload``):
    done once before forking workers, which inherit both."""
    for ref in (*plan.extractors, *((plan.asr,) if plan.asr is not None else ())):
        _instance(ref).preload()


def _worker_setup(plan: Plan) -> None:
    """In a worker: let the main process decide about Ctrl-C; cap torch threads (before torch loads)."""
    if not getattr(_local, "ready", False):
        _local.ready = True
        if os.getpid() != plan.main_pid and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    n = plan.torch_threads
    if not n:
        return
    torch = sys.modules.get("torch")
    if torch is None:  # read by torch's thread pools when an extractor first imports it
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
    elif torch.get_num_threads() != n:
        torch.set_num_threads(n)


def run_clip(index: int, item: Item, plan: Plan, wait: bool = False, cached_only: bool = False,
             on_stage: Callable[[str], None] | None = None, keep_clip: bool = False) -> Record:
    """Extract (or find cached) every stage of one clip. Never raises for a bad clip.

    ``cached_only``: extract nothing; a clip with work left comes back with status "todo".
    ``on_stage(name)`` is called as each stage starts (progress); an MsaError it raises fails the clip
    with that error's reason (how msa-serve cancels a job between stages).
    ``keep_clip``: the record keeps the Clip the stages decoded (None when all was cached), for a caller in
    the same process that reads the clip again; never for records sent back from worker processes.
    """
    _worker_setup(plan)
    rec = Record(index, item)
    if plan.stop_file and os.path.exists(plan.stop_file):
        rec.status = "skipped"
        return rec
    job = _ClipJob(item, plan, rec, on_stage)
    try:
        job.run(wait, cached_only)
    except StorageError:
        raise
    except MsaError as e:
        job.fail(e.reason, e.one_line())
    except OSError as e:
        if e.errno in _STORAGE_ERRNOS and job.writing:
            raise StorageError(f"cannot write to {plan.out_dir}: {e.strerror} ({e.filename}); finished clips are "
                               "kept in the cache, fix the output folder and rerun to resume") from e
        job.fail("io_error", f"{e.strerror or e} ({e.filename or item.path})")
    except Exception as e:  # noqa: BLE001 - an extractor bug must cost one clip, not the batch
        log.debug("clip %s failed", item.id, exc_info=True)
        job.fail("extractor_crash", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    if keep_clip and rec.status != "failed":
        rec.clip = job.clip
    _worker_setup(plan)
    if rec.status == "failed" and plan.stop_file and os.path.exists(plan.stop_file):
        rec.status, rec.error = "skipped", None  # killed by the Ctrl-C that stops the run: not the clip's fault
    return rec


class _ClipJob:
    def __init__(self, item: Item, plan: Plan, rec: Record, on_stage: Callable[[str], None] | None = None) -> None:
        self.item, self.plan, self.rec = item, plan, rec
        self.on_stage = on_stage
        self.cache = FeatureCache(plan.out_dir)
        self.stage = "hash"
        self.writing = False
        self.saves = 0  # cache entries this job wrote
        self.clip: Any = None

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        self.stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.rec.seconds[stage] = self.rec.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def fail(self, reason: str, message: str) -> None:
        self.rec.status = "failed"
        self.rec.error = {"id": self.item.id, "path": str(self.item.path), "stage": self.stage,
                          "reason": reason, "message": message}

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Marks cache writes: an OSError here (disk full, read-only) stops the run, not just this clip.

        The flag stays set when the write fails, so ``run_clip``'s handler still sees it."""
        self.writing = True
        yield
        self.writing = False

    def _save(self, name: str, spec_hash: str, key: str, obj: Any, spec: dict[str, Any] | None = None) -> None:
        with self._writing():
            if spec is not None:
                self.cache.write_spec(name, spec_hash, spec)
            self.cache.save(name, spec_hash, key, obj)
        self.saves += 1

    def run(self, wait: bool, cached_only: bool = False) -> None:
        with self._timed("hash"):
            sha = _hash_clip(self.item.path)
        info = self._probe(sha)
        active = self._check_streams(info)
        transcript = self._transcript(sha, info, compute=False)
        self._check_align(transcript)
        found = self._lookup(sha, transcript, active)
        if transcript is None or len(found) < len(active):
            if cached_only:
                self.rec.status = "todo"
                return
            with self._writing():  # the claim is a file in the output folder too
                lock = self.cache.lock(sha, wait=wait)
            if lock is None:
                self.rec.status = "busy"
                return
            # a thread beside the transcript only where the plan runs the visual stage there
            side_thread = ThreadPoolExecutor(1, thread_name_prefix="msa-visual") if self.plan.overlap else nullcontext()
            with lock, side_thread as side:
                before = self.saves
                ahead = self._visual_ahead(side, info, transcript, found, active)
                transcript = self._transcript(sha, info, compute=True)
                self._check_align(transcript)
                found = self._lookup(sha, transcript, active)  # another process may have finished it
                for ref in self.plan.extractors:
                    if ref.modality in active and ref.modality not in found:
                        found[ref.modality] = self._extract(ref, sha, transcript, info, ahead)
                # "cached" when the process that held the claim left nothing to do
                self.rec.status = "extracted" if self.saves > before else "cached"
        assert transcript is not None
        self._finish(transcript, found)

    def _probe(self, sha: str) -> Any:
        with self._timed("probe"):
            info = self.cache.load(PROBE_NAME, PROBE_VERSION, sha)
            if info is None:
                from msa.pipeline.extract.media import probe

                info = probe(self.item.path)
                self._save(PROBE_NAME, PROBE_VERSION, sha, info)
            info = dataclasses.replace(info, path=self.item.path)  # the cached path may be a renamed copy
        self.rec.duration = float(info.duration or 0.0)
        limit = self.plan.limit_seconds
        if limit and info.duration and info.duration > limit:
            raise MediaError(f"{self.item.path}: {info.duration:.1f} s is longer than --limit-seconds {limit:g}",
                             reason="too_long")
        return info

    def _check_streams(self, info: Any) -> set[str]:
        """Modalities to compute; a missing stream is an error or an empty modality (plan.missing)."""
        active = set()
        needed = [r.modality for r in self.plan.extractors]
        if self._needs_asr() and self.plan.asr is not None:
            needed.append("asr")
        for m in needed:
            attr, reason = _STREAM.get(m, (None, None))
            if attr is None or getattr(info, attr):
                active.add(m)
            elif self.plan.missing == "error":
                what = "audio" if reason == "no_audio" else "video"
                raise MediaError(f"{self.item.path}: no {what} stream (needed by {m}; --missing empty keeps the "
                                 "clip with empty features)", reason=reason)
            else:
                self.rec.flags += (reason,) if reason not in self.rec.flags else ()
        active.discard("asr")
        return active

    def _check_align(self, transcript: Transcript | None) -> None:
        if self.plan.align and transcript is not None and transcript.text.strip() and not transcript.words:
            self.stage = "align"
            raise ExtractionError(
                f"{self.item.path}: --align needs word timings, but the {transcript.source} transcript has none "
                "(leave the text out so ASR transcribes the clip with word times)", reason="no_word_timings")

    def _needs_asr(self) -> bool:
        return not self.item.text and self.item.sidecar is None

    def _transcript(self, sha: str, info: Any, compute: bool) -> Transcript | None:
        """label.csv text, else a sidecar file, else ASR (cached); None if ASR is needed and ``compute`` is off."""
        with self._timed("transcript"):
            if self.item.text:
                return Transcript(self.item.text.strip(), source="label_csv")
            if (sidecar := self.item.sidecar) is not None:
                text, words = read_sidecar(sidecar)
                return Transcript(text, words, source="sidecar")
            if self.plan.asr is None or not info.has_audio:
                return Transcript("", source="none")
            asr = _instance(self.plan.asr)
            spec = asr.spec()
            self.rec.asr_spec = spec.to_dict()
            cached = self.cache.load(asr.name, spec.spec_hash, sha)
            if cached is not None or not compute:
                return cached
        self._decode_audio(info)
        with self._timed("transcript"):
            transcript = asr.transcribe(self._clip(info))  # type: ignore[attr-defined]
            self._save(asr.name, spec.spec_hash, sha, transcript, spec=self.rec.asr_spec)
        return transcript

    def _clip(self, info: Any, transcript: Transcript | None = None) -> Any:
        if self.clip is None:
            from msa.pipeline.extract.clip_input import Clip

            self.clip = Clip(self.item.clip_id, self.item.path, info)  # info from the probe cache: no re-probe
        if transcript is not None:
            self.clip.transcript = transcript
        return self.clip

    def _decode_audio(self, info: Any) -> None:
        with self._timed("decode"):
            self._clip(info).audio()

    def _key(self, modality: str, sha: str, transcript: Transcript | None) -> str | None:
        if modality != "text":
            return sha
        if transcript is None:
            return None
        return json_sha256({"text": transcript.text, "words": [dataclasses.astuple(w) for w in transcript.words]}, 64)

    def _lookup(self, sha: str, transcript: Transcript | None, active: set[str]) -> dict[str, tuple[Any, str]]:
        """Cached features per modality (loading also verifies each file's checksum)."""
        found: dict[str, tuple[Any, str]] = {}
        for ref in self.plan.extractors:
            key = self._key(ref.modality, sha, transcript)
            if ref.modality in active and key is not None:
                feats = self.cache.load(ref.cls.name, self.plan.spec_hash(ref.modality), key)
                if feats is not None:
                    found[ref.modality] = (feats, key)
        return found

    def _visual_ahead(self, side: ThreadPoolExecutor | None, info: Any, transcript: Transcript | None,
                      found: dict[str, tuple[Any, str]], active: set[str]) -> Future[tuple[Features, float]] | None:
        """Start the visual extractor on ``side`` when the transcript is still to be computed (it reads
        frames only: its result cannot depend on the transcript). The features are saved, and an error
        raised, when the stage loop reaches ``visual``, as if it had run there."""
        ref = next((r for r in self.plan.extractors if r.modality == "visual"), None)
        if side is None or transcript is not None or ref is None or "visual" not in active or "visual" in found:
            return None
        extractor, clip = _instance(ref), self._clip(info)  # this thread's instance, handed over

        def run() -> tuple[Features, float]:
            t0 = time.perf_counter()
            return extractor.extract(clip), time.perf_counter() - t0

        return side.submit(run)

    def _extract(self, ref: ExtractorRef, sha: str, transcript: Transcript, info: Any,
                 ahead: Future[tuple[Features, float]] | None = None) -> tuple[Features, str]:
        key = self._key(ref.modality, sha, transcript)
        assert key is not None
        if ref.modality == "audio":
            self._decode_audio(info)
        clip = _TextClip(self.item.clip_id, transcript) if ref.modality == "text" else self._clip(info, transcript)
        extractor = _instance(ref)
        with self._timed(ref.modality):
            if ref.modality == "visual" and ahead is not None:
                t0 = time.perf_counter()
                feats, seconds = ahead.result()  # its error, if any, is raised here: at this stage
                # the stage's time is the extractor's own (on the side thread), not this wait for it
                self.rec.seconds[ref.modality] = self.rec.seconds.get(ref.modality, 0.0) + seconds - (
                    time.perf_counter() - t0)
            else:
                feats = extractor.extract(clip)
            self._save(ref.cls.name, self.plan.spec_hash(ref.modality), key, feats, spec=self.plan.specs[ref.modality])
        return feats, key

    def _finish(self, transcript: Transcript, found: dict[str, tuple[Any, str]]) -> None:
        flags = list(self.rec.flags)
        if not transcript.text.strip():
            flags.append("no_speech")
        visual = found.get("visual")
        if visual is not None and _no_face(visual[0]):
            flags.append("no_face")
        self.rec.flags = tuple(dict.fromkeys(flags))
        refs = {m: (self._name(m), self.plan.spec_hash(m), key) for m, (_, key) in found.items()}
        self.rec.entry = Entry(
            item=self.item, refs=refs, lengths={m: int(f.data.shape[0]) for m, (f, _) in found.items()},
            transcript=transcript.text, flags=self.rec.flags,
            words=tuple((w.word, w.start, w.end) for w in transcript.words), language=transcript.language,
        )

    def _name(self, modality: str) -> str:
        return next(r.cls.name for r in self.plan.extractors if r.modality == modality)


def _no_face(feats: Features) -> bool:
    meta = feats.meta
    if "no_face" in meta:
        return bool(meta["no_face"])
    if "face_ratio" in meta:
        return float(meta["face_ratio"]) == 0.0
    return False


def _hash_clip(path: Path) -> str:
    """sha256 of the file's bytes (computed once per clip per run); unreadable files are a clip error."""
    try:
        return file_sha256(path)
    except IsADirectoryError:
        raise MediaError(f"{path}: is a directory, not a media file", reason="not_found") from None
    except PermissionError:
        raise MediaError(f"{path}: permission denied", reason="permission_denied") from None
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror or e})", reason="not_found") from None
