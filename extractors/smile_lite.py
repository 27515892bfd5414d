"""openSMILE's C library through the ``opensmile`` wheel's own ctypes binding, without its Python layer.

``import opensmile`` costs about 0.8 CPU-seconds (it imports pandas, audinterface, audformat and
audobject), more than openSMILE itself spends on a minute of speech. ``LiteSmile`` runs the same
config files through the same ctypes binding (``opensmile/core/lib.py``, loaded on its own, so the
package's ``__init__`` never runs) with the options ``opensmile.Smile`` passes, and returns the
frames as a numpy array: identical values, frame for frame (tests/extractors/test_smile_lite.py
compares it with ``opensmile.Smile.process_signal``). ``lite_smile(...)`` returns None when the
binding is not where the wheel puts it; callers then use ``opensmile.Smile``.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

# opensmile.config's standard component and include names (opensmile 2.x)
_SOURCE, _SINK = "extsource", "extsink"
_INPUT_CONF = "shared/standard_external_wave_input.conf.inc"
_OUTPUT_CONF = "shared/standard_external_data_output_single.conf.inc"
_LEVELS = {"LowLevelDescriptors": "lld", "LowLevelDescriptors_Deltas": "lld_de", "Functionals": "func"}
_SETS = {"eGeMAPSv02": "egemaps/v02/eGeMAPSv02", "ComParE_2016": "compare/ComParE_2016"}


@functools.lru_cache(maxsize=1)
def _binding() -> ModuleType | None:
    """``opensmile/core/lib.py`` as a module of its own (it imports only ctypes and numpy)."""
    spec = importlib.util.find_spec("opensmile")  # locates the package without running its __init__
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(roots[0]) / "core" / "lib.py" if roots else None
    if path is None or not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("msa_opensmile_binding", path)
    if mod_spec is None or mod_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except (OSError, ImportError, RuntimeError):  # no shared library for this platform
        return None
    return module if hasattr(module, "OpenSMILE") else None


class LiteSmile:
    """One feature set at one level, as ``opensmile.Smile(feature_set, feature_level)`` with its defaults."""

    def __init__(self, binding: ModuleType, config_root: Path, feature_set: str, level: str) -> None:
        self._lib = binding
        self._root = config_root
        self.config_path = str(config_root / f"{_SETS[feature_set]}.conf")
        self._level = _LEVELS[level]
        self.feature_names = self._names()

    def _options(self, sampling_rate: int | None = None) -> dict[str, Any]:
        """What ``opensmile.Smile._options`` + ``_extract`` pass (no user options, default functionals include)."""
        options: dict[str, Any] = {
            "sink": str(self._root / _OUTPUT_CONF),
            "sinkLevel": self._level,
            "bufferModeRbConf": str(self._root / "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": str(self._root / "shared/FrameModeFunctionals.conf.inc"),
            "source": str(self._root / _INPUT_CONF),
        }
        if sampling_rate is not None:
            options.update(sampleRate=sampling_rate, nBits=16)
        return options

    def _new(self, options: dict[str, Any]) -> Any:
        smile = self._lib.OpenSMILE()
        smile.initialize(config_file=self.config_path, options=options, loglevel=2, log_file=None, debug=False)
        return smile

    def _names(self) -> list[str]:
        smile = self._new(self._options())
        try:
            n = smile.external_sink_get_num_elements(_SINK)
            return [smile.external_sink_get_element_name(_SINK, i) for i in range(n)]
        finally:
            smile.free()

    def process(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """(frames, features) float32 of a mono float signal in [-1, 1] (16-bit, as opensmile.Smile feeds it)."""
        pcm = (np.array(signal, dtype=np.float32).reshape(-1) * np.float32(32768)).astype(np.int16)
        rows: list[np.ndarray] = []
        smile = self._new(self._options(sampling_rate))
        try:
            smile.external_sink_set_callback_ex(_SINK, lambda data, meta: rows.append(data.copy()))
            smile.external_audio_source_write_data(_SOURCE, bytes(pcm))
            smile.external_audio_source_set_eoi(_SOURCE)
            smile.run()
        finally:
            smile.free()
        if not rows:  # opensmile.Smile warns and gives one NaN row; callers check the frame count
            return np.full((1, len(self.feature_names)), np.nan, dtype=np.float32)
        return np.vstack(rows).astype(np.float32, copy=False)


def lite_smile(feature_set: str, level: str) -> LiteSmile | None:
    """A ``LiteSmile``, or None when the opensmile wheel's binding or config files are not found."""
    if feature_set not in _SETS or level not in _LEVELS:
        return None
    binding = _binding()
    if binding is None:
        return None
    root = Path(binding.__file__).resolve().parent / "config"
    if not (root / f"{_SETS[feature_set]}.conf").is_file() or not (root / _OUTPUT_CONF).is_file():
        return None
    return LiteSmile(binding, root, feature_set, level)
