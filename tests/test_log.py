"""skyseg.log: the batch report and the per-item loop of batch stages."""

from __future__ import annotations

import pytest

from skyseg.errors import ImageReadError
from skyseg.log import BatchReport, for_each


def _size(path: str) -> int:
    if path.endswith(".bad"):
        raise ImageReadError(f"{path}: damaged")
    return len(path)


def test_for_each_collects_results_and_goes_on_after_a_failure():
    report = BatchReport("demo")
    assert for_each(["a.exr", "b.bad", "cc.exr", "d.bad"], _size, report, desc="demo") == [5, 6]
    assert report.done == ["a.exr", "cc.exr"]
    assert report.failures == [("b.bad", "b.bad: damaged"), ("d.bad", "d.bad: damaged")]
    assert report.exit_code == 1


def test_for_each_names_items_and_may_leave_success_to_a_later_step():
    report = BatchReport("demo")
    pairs = [("a.exr", "a"), ("b.bad", "b")]
    results = for_each(pairs, lambda pair: _size(pair[0]), report, desc="demo",
                       name=lambda pair: pair[1], record_success=False)
    assert results == [5]
    assert report.done == [] and report.failures == [("b", "b.bad: damaged")]


def test_for_each_stops_on_a_bug():
    def broken(item):
        raise ZeroDivisionError(item)

    with pytest.raises(ZeroDivisionError):
        for_each(["a"], broken, BatchReport("demo"), desc="demo")


def test_for_each_of_nothing():
    report = BatchReport("demo")
    assert for_each([], _size, report, desc="demo") == []
    assert report.exit_code == 0
