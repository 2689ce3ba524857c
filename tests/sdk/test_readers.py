"""The in-memory readers answer like the SQLite stores they stand in for."""

import pytest

from kdaliens.sdk import InputError
from kdaliens.sdk.readers import EventReader, ItemReader, MemoryEvents, MemoryItems
from kdaliens.sdk.stores import ItemCache


def test_memory_items_answer_like_the_item_cache(tmp_path):
    attrs = {42: {"genres": ["Drama"], "year": 1995}, " 7 ": {"item_id": 7, "year": 1990}, "x": {}}
    mem = MemoryItems(attrs)
    with ItemCache(tmp_path / "items.db") as cache:
        cache.upsert([{"item_id": k, **v} for k, v in attrs.items()])
        ids = ["42", 7, 42.0, "missing", "x", " 42 "]
        assert mem.get_many(ids) == cache.get_many(ids)
        assert list(mem.get_many(ids)) == ["42", "7", "x"]  # request order, each id once
        assert mem.get_many(ids)["7"]["item_id"] == "7"
    with pytest.raises(InputError, match="missing or empty"):
        mem.get_many(["42", "  "])
    assert isinstance(mem, ItemReader)


def test_memory_events_filter_by_time_and_user():
    log = MemoryEvents({"u1": [{"item_id": "1", "ts": 1.0}, {"item_id": "2", "ts": 5.0}]})
    assert [e["item_id"] for e in log.events(" u1 ", before=5.0)] == ["1"]
    assert log.events("u2") == [] and isinstance(log, EventReader)
