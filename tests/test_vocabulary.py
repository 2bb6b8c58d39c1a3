"""The query vocabulary is defined once; a backend that lacks a mapping for any of it fails to load."""

import importlib

import pytest

from millimetric.events import queries
from millimetric.store.duckdb import reads


def test_require_mapping_names_what_is_missing_and_what_is_unknown():
    with pytest.raises(RuntimeError, match=r"missing \['b'\], unknown \['c'\]"):
        queries.require_mapping("Some backend", "filters", ["a", "c"], ["a", "b"])
    queries.require_mapping("Some backend", "filters", ["b", "a"], ["a", "b"])


@pytest.mark.parametrize("name", ["FILTERS", "GROUP_BY", "METRICS", "INTERVALS", "BREAKDOWNS"])
def test_a_vocabulary_entry_the_duckdb_backend_does_not_map_stops_it_loading(monkeypatch, name):
    monkeypatch.setattr(queries, name, (*getattr(queries, name), "added_but_not_mapped"))
    try:
        with pytest.raises(RuntimeError, match="added_but_not_mapped"):
            importlib.reload(reads)
    finally:
        monkeypatch.undo()
        importlib.reload(reads)
