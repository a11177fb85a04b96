"""The study file: frozen dataclasses that validate themselves, and the TOML reader.

A study file becomes a :class:`StudySpec`, checked whole before anything touches a database;
inner code trusts the spec it gets. Nothing here imports torch, Optuna or SQLAlchemy.
"""

from depthsearch.spec._params import Choices, Fixed, FloatRange, IntRange, ParamSpec
from depthsearch.spec._spec import (
    MAX_LAYERS,
    OBJECTIVES,
    PRUNER_KEYS,
    ConfirmSpec,
    DataSpec,
    PrunerSpec,
    SamplerSpec,
    SpaceSpec,
    StudySpec,
    TaskSpec,
    TrackingSpec,
    TrainSpec,
    WorkersSpec,
)
from depthsearch.spec._toml import file_sha256, load_spec, read_study_file, spec_from_dict

__all__ = [
    "MAX_LAYERS",
    "OBJECTIVES",
    "PRUNER_KEYS",
    "Choices",
    "ConfirmSpec",
    "DataSpec",
    "Fixed",
    "FloatRange",
    "IntRange",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "SpaceSpec",
    "StudySpec",
    "TaskSpec",
    "TrackingSpec",
    "TrainSpec",
    "WorkersSpec",
    "file_sha256",
    "load_spec",
    "read_study_file",
    "spec_from_dict",
]
