"""Study files: the shipped ones load; every bad key or value is refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthsearch import load_spec
from depthsearch.errors import SpecError
from depthsearch.spec import Choices, FloatRange, IntRange, spec_from_dict

from .conftest import REPO, write_study


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_study_files_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.n_trials >= 1


def test_quickstart_spec_reads_as_written() -> None:
    spec = load_spec(REPO / "studies" / "quickstart.toml")
    assert spec.name == "quickstart"
    assert spec.data.source == "csv" and spec.data.target == "sunspots"
    assert Path(spec.data.path or "").is_file() and spec.data.sha256
    assert spec.space.num_layers == IntRange(1, 4)
    assert spec.space.hidden_size == Choices((16, 32, 64))
    assert isinstance(spec.space.lr, FloatRange) and spec.space.lr.log


@pytest.mark.parametrize("which", ["tiny", "quickstart", "tracked"])
def test_dict_form_round_trips(tiny_study: Path, which: str) -> None:
    if which == "tracked":
        text = tiny_study.read_text() + '\n[tracking]\nmlflow = "http://mlflow:5000"\n'
        tiny_study.write_text(text)
    spec = load_spec(tiny_study if which != "quickstart" else REPO / "studies" / "quickstart.toml")
    assert spec_from_dict(spec.to_dict()) == spec
    if which == "tracked":
        assert spec.tracking.mlflow == "http://mlflow:5000" and spec.tracking.experiment is None


BAD = [
    ("[study]\nname='x'\nn_trials=0\n", "[study] n_trials: must be >= 1, but got 0"),
    ("[study]\nname='x'\n", "[study] n_trials: is required"),
    ("[study]\nname='x'\nn_trials=3\ncolour='red'\n", "[study] unknown key(s) ['colour']"),
    # A misspelled key is named, with the key meant, before the missing one is.
    ("[study]\nname='x'\nn_trails=3\n", "unknown key(s) ['n_trails']; did you mean 'n_trials'?"),
    (
        "[study]\nname='x'\nn_trials=3\n[train]\nmax_epoch=3\nlrate=1\n",
        "[train] unknown key(s) ['lrate', 'max_epoch']; did you mean 'max_epoch' for "
        "'max_epochs'?",
    ),
    ("[stduy]\nname='x'\n", "unknown table(s) ['stduy']; did you mean 'study'?"),
    (
        "[study]\nname='x'\nn_trials=3\n[prunner]\nkind='median'\n",
        "unknown table(s) ['prunner']; did you mean 'pruner'?",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[pruner]\nkind='costaware'\n",
        "but got 'costaware'; did you mean 'cost-aware'?",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\nnum_layers={low=3, high=1}\n",
        "[space] num_layers: low <= high must hold, but got (low=3, high=1)",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\nnum_layers={low=0, high=2}\n",
        "[space] num_layers: low must be >= 1, but got 0",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\ndropout={low=0.0, high=1.0}\n",
        "[space] dropout: high must be < 1.0, but got 1.0",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\nlr={low=0.0, high=0.1, log=true}\n",
        "[space] lr: low must be > 0.0",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\nhidden_size=[]\n",
        "[space] hidden_size: a list of choices must not be empty",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[space]\nhidden_size=['big']\n",
        "[space] hidden_size: choice 'big' must be an integer",
    ),
    ("[study]\nname='x'\nn_trials=3\n[space]\nwidth=3\n", "[space] unknown key(s) ['width']"),
    (
        "[study]\nname='x'\nn_trials=3\n[train]\ndevice='tpu'\n",
        "[train] device: must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got 'tpu'",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[train]\nmax_epochs=2.5\n",
        "[train] max_epochs: must be an integer, but got 2.5",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[sampler]\nkind='cmaes'\n",
        "[sampler] kind: must be one of ['tpe', 'random'], but got 'cmaes'",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[pruner]\nkind='median'\nreduction_factor=3\n",
        "[pruner] unknown key(s) ['reduction_factor'] for kind = 'median'",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[pruner]\nkind='percentile'\npercentile=100\n",
        "[pruner] percentile: must be < 100",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[pruner]\nkind='median'\npercentile=25\n",
        "[pruner] unknown key(s) ['percentile'] for kind = 'median'",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[data]\nsource='hdf5'\n",
        "[data] source: must be one of ['csv', 'parquet', 'npz', 'ts', 'synthetic']",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[data]\nsource='csv'\ntarget='y'\n",
        "[data] path: is required",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[data]\nsource='csv'\npath='nope.csv'\ntarget='y'\n",
        "[data] path: no such file",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[data]\nval_fraction=1.0\n",
        "[data] val_fraction: must be < 1.0",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[workers]\nheartbeat_interval=30\ngrace_period=10\n",
        "[workers] grace_period must be > heartbeat_interval",
    ),
    ("[study\nname='x'\n", "not valid TOML"),
    (
        "[study]\nname='x'\nn_trials=3\nobjectives=['val_loss', 'flops']\n",
        "[study] objectives: unknown objective(s) ['flops']; allowed are ['val_loss', "
        "'param_count', 'seconds_per_epoch', 'val_accuracy', 'val_f1']",
    ),
    (
        "[study]\nname='x'\nn_trials=3\nobjectives=['param_count', 'val_loss']\n",
        "[study] objectives: must start with 'val_loss'",
    ),
    (
        "[study]\nname='x'\nn_trials=3\nobjectives=['val_loss', 'val_loss']\n",
        "[study] objectives: names an objective twice",
    ),
    ("[study]\nname='x'\nn_trials=3\nobjectives=[]\n", "[study] objectives: must be a non"),
    (
        "[study]\nname='x'\nn_trials=3\nobjectives=['val_loss', 'param_count']\n"
        "[pruner]\nkind='median'\n",
        "[pruner] kind: Optuna prunes single-objective studies only",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[tracking]\nmlflow=5000\n",
        "[tracking] mlflow: must be a non-empty string, but got 5000",
    ),
    (
        "[study]\nname='x'\nn_trials=3\n[tracking]\nmlfow='http://h:5000'\n",
        "[tracking] unknown key(s) ['mlfow']; did you mean 'mlflow'?",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_study_file_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_multi_objective_study_defaults_to_no_pruner(tmp_path: Path) -> None:
    path = tmp_path / "mo.toml"
    path.write_text("[study]\nname='x'\nn_trials=3\nobjectives=['val_loss', 'param_count']\n")
    spec = load_spec(path)
    assert spec.objectives == ("val_loss", "param_count") and spec.multi_objective
    assert spec.pruner.kind == "none"
    assert spec_from_dict(spec.to_dict()) == spec
    single = load_spec(write_study(tmp_path))
    assert single.objectives == ("val_loss",) and not single.multi_objective


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such study file"):
        load_spec(tmp_path / "absent.toml")


def test_csv_path_is_relative_to_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "s.csv").write_text("v\n1\n2\n", encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(
        "[study]\nname='x'\nn_trials=1\n[data]\nsource='csv'\npath='d/s.csv'\ntarget='v'\n"
    )
    assert load_spec(path).data.path == str((tmp_path / "d" / "s.csv").resolve())


def test_sha256_pins_the_data(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("v\n1\n2\n", encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(
        "[study]\nname='x'\nn_trials=1\n[data]\nsource='csv'\npath='s.csv'\ntarget='v'\n"
        f"sha256='{'0' * 64}'\n"
    )
    with pytest.raises(SpecError, match="the data differs"):
        load_spec(path)


def test_a_stored_study_whose_data_file_moved_says_how_to_point_at_it(tmp_path: Path) -> None:
    from depthsearch.errors import MissingDataFile
    from depthsearch.studies import create_study, read_spec

    (tmp_path / "s.csv").write_text("v\n" + "\n".join(str(i % 7) for i in range(60)) + "\n")
    path = tmp_path / "s.toml"
    path.write_text(
        "[study]\nname='moved'\nn_trials=1\n[data]\nsource='csv'\npath='s.csv'\ntarget='v'\n"
        "window=4\n"
    )
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    create_study(load_spec(path), url)
    (tmp_path / "s.csv").rename(tmp_path / "elsewhere.csv")
    with pytest.raises(MissingDataFile, match=r"no such file: .*s\.csv; pass --data PATH"):
        read_spec("moved", url)
    moved = read_spec("moved", url, data_path=str(tmp_path / "elsewhere.csv"))
    assert moved.data.path == str(tmp_path / "elsewhere.csv")


def test_tiny_study_helper_is_valid(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path, name="helper", n_trials=2))
    assert spec.n_trials == 2 and spec.train.threads == 1


def test_a_spec_built_in_code_validates_itself() -> None:
    from depthsearch.spec import PrunerSpec, SpaceSpec, StudySpec, TrainSpec

    with pytest.raises(SpecError, match=r"^\[train\] max_epochs: must be >= 1, but got 0$"):
        TrainSpec(max_epochs=0)
    with pytest.raises(SpecError, match=r"\[space\] num_layers: low must be >= 1, but got 0"):
        SpaceSpec(num_layers=IntRange(0, 3))
    with pytest.raises(SpecError, match=r"\[study\] n_trials: is required"):
        StudySpec(name="x")
    with pytest.raises(SpecError, match=r"\[pruner\] kind: Optuna prunes single-objective"):
        StudySpec(name="x", n_trials=3, objectives=("val_loss", "param_count"))
    # Defaults come from the fields, and ints become floats where a float is wanted.
    spec = StudySpec(name="x", n_trials=3, train=TrainSpec(grad_clip=2))
    assert spec.train.grad_clip == 2.0 and isinstance(spec.train.grad_clip, float)
    assert spec.pruner == PrunerSpec() and spec_from_dict(spec.to_dict()) == spec


def test_a_study_file_without_a_pruner_table_gets_the_documented_default() -> None:
    # The README names cost-aware the default; the reader gave "median" before (issue #23).
    base = {"study": {"name": "x", "n_trials": 1}}
    assert spec_from_dict(base).pruner.kind == "cost-aware"
    assert spec_from_dict({**base, "pruner": {"n_warmup_steps": 2}}).pruner.kind == "cost-aware"
    multi = {"study": {"name": "x", "n_trials": 1, "objectives": ["val_loss", "param_count"]}}
    assert spec_from_dict(multi).pruner.kind == "none"
