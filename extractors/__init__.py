"""Feature extractors, one small module per family, all reachable through ``EXTRACTORS``.

Entries are lazy ``"module:Class"`` strings so importing this package imports no heavy backend.
"""
from __future__ import annotations

from msa.core.registry import Registry

EXTRACTORS: Registry = Registry("extractor")

# Recipes name one extractor per modality; ``default`` runs fully offline on package-shipped weights.
RECIPES: dict[str, dict[str, str]] = {}

for _name, _path in {
    "whisper": "msa.extractors.asr:WhisperASR",
    "minilm": "msa.extractors.text:MiniLMText",
    "hf": "msa.extractors.text:HFText",
    "e5": "msa.extractors.e5:E5Text",
    "e5_minilm": "msa.extractors.e5:E5MiniLMText",
    "covarep_like": "msa.extractors.audio:CovarepLike",
    "egemaps": "msa.extractors.audio:EGeMAPS",
    "egemaps_func": "msa.extractors.audio:EGeMAPSFunctionals",
    "whisper_enc": "msa.extractors.whisper_enc:WhisperEnc",
    "compare": "msa.extractors.audio:ComParE",
    "mfcc39": "msa.extractors.audio:MFCC39",
    "facemesh_au": "msa.extractors.facemesh:FaceMeshAU",
    "fer_emotion": "msa.extractors.fer:FerEmotion",
    "clip_vitb16": "msa.extractors.clip:ClipViTB16",
    "pyfeat_au": "msa.extractors.pyfeat:PyFeatAU",
}.items():
    EXTRACTORS.register(_name, _path)

RECIPES.update(
    {
        # fully offline: package-shipped weights only
        "default": {"asr": "whisper", "text": "minilm", "audio": "egemaps", "visual": "facemesh_au"},
        # closer to MMSA-FET's MOSI-style features (COVAREP stand-in) with expressions
        "mosi": {"asr": "whisper", "text": "minilm", "audio": "covarep_like", "visual": "fer_emotion"},
        # AVEC2019 depression setting: MFCC + AU-style facial features
        "avec2019": {"asr": "whisper", "text": "minilm", "audio": "mfcc39", "visual": "facemesh_au"},
        # CLIP-CA-MSA: CLIP frame embeddings (needs CLIP weights)
        "clip": {"asr": "whisper", "text": "minilm", "audio": "egemaps", "visual": "clip_vitb16"},
        # CH-SIMS / SIMS v2 (Mandarin): multilingual e5 offline, since MiniLM's vocabulary is English;
        # msa-extract --text-encoder DIR (a local bert-base-chinese) gives text_bert ids instead
        "sims": {"asr": "whisper", "text": "e5", "audio": "egemaps", "visual": "facemesh_au"},
    }
)

# A dataset's default recipe where it is not ``default`` (msa-extract --dataset NAME).
DATASET_RECIPES: dict[str, str] = {"sims": "sims", "simsv2": "sims"}
