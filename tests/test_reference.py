"""The study-file reference is made from the loader's own rules: it lists exactly the keys a
study file may hold, and says something about every one of them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from depthsearch.errors import SpecError
from depthsearch.spec import DATA_KEYS, spec_from_dict
from depthsearch.spec._reference import TABLES, reference, reference_markdown

_BASE: dict[str, Any] = {"study": {"name": "ref", "n_trials": 1}}


def _allowed_keys(table: str) -> set[str]:
    """The keys the loader allows in ``table``, read from the error an unknown key gets."""
    doc = {**_BASE, table: {**_BASE.get(table, {}), "zz_not_a_key": 1}}
    if table == "pruner":
        doc[table]["kind"] = "none"
    with pytest.raises(SpecError) as err:
        spec_from_dict(doc)
    found = re.search(r"allowed keys are \[([^\]]*)\]", str(err.value))
    assert found, str(err.value)
    return {k.strip(" '") for k in found.group(1).split(",")}


@pytest.mark.parametrize("table", [t for t, _ in TABLES if t not in ("data", "pruner")])
def test_reference_lists_exactly_the_keys_the_loader_allows(table: str) -> None:
    listed = {k.name for k in reference() if k.table == table}
    assert listed == _allowed_keys(table)


def test_reference_lists_every_data_and_pruner_key() -> None:
    assert {k.name for k in reference() if k.table == "data"} == set(DATA_KEYS) - {"targets"}
    from depthsearch.spec import PRUNER_KEYS

    pruner = {k for keys in PRUNER_KEYS.values() for k in keys} | {"kind"}
    assert {k.name for k in reference() if k.table == "pruner"} == pruner


def test_every_key_has_a_sentence_and_the_page_a_row_for_it() -> None:
    page = reference_markdown()
    for key in reference():
        assert key.doc.endswith((".", ")")), f"[{key.table}] {key.name}: {key.doc!r}"
        assert f"| `{key.name}` |" in page
    for table, _ in TABLES:
        assert f"## [{table}]" in page
