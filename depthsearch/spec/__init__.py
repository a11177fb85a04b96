"""The study file: frozen dataclasses that validate themselves, and the TOML reader.

A study file becomes a :class:`StudySpec`, checked whole before anything touches a database;
inner code trusts the spec it gets. Nothing here imports torch, Optuna or SQLAlchemy.
"""

from depthsearch.spec._data import DATA_KEYS, SOURCES, applicable, data_keys, samples_of
from depthsearch.spec._params import Choices, Fixed, FloatRange, IntRange, ParamSpec
from depthsearch.spec._reference import reference, reference_markdown
from depthsearch.spec._spec import (
    MAX_LAYERS,
    OBJECTIVES,
    PRUNER_KEYS,
    READOUTS,
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
    "DATA_KEYS",
    "MAX_LAYERS",
    "OBJECTIVES",
    "PRUNER_KEYS",
    "READOUTS",
    "SOURCES",
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
    "applicable",
    "data_keys",
    "file_sha256",
    "load_spec",
    "read_study_file",
    "reference",
    "reference_markdown",
    "samples_of",
    "spec_from_dict",
]
