"""Merge Patch: the RFC 7396 examples, and properties over any JSON documents (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher.merge_patch import apply_merge_patch, json_equal, merge_patch

scalars = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
names = st.text(alphabet="abcde~/", max_size=3)


def documents(with_nulls: bool) -> st.SearchStrategy[Any]:
    leaves = st.one_of(scalars, st.none()) if with_nulls else scalars
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4), max_leaves=12
    )


objects_with_nulls = st.dictionaries(names, documents(with_nulls=True), max_size=5)
objects_without_nulls = st.dictionaries(names, documents(with_nulls=False), max_size=5)


# RFC 7396 appendix A, verbatim.
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_apply_follows_the_rfc_examples(target: Any, patch: Any, result: Any) -> None:
    assert apply_merge_patch(target, patch) == result


def test_arrays_are_sent_whole_and_unchanged_members_not_at_all() -> None:
    current = {"title": "A", "keyword": ["x", "y"], "license": {"name": "OGL", "url": "u"}}
    desired = {"title": "A", "keyword": ["x", "y", "z"], "license": {"name": "OGL", "url": "v"}}
    assert merge_patch(current, desired) == {"keyword": ["x", "y", "z"], "license": {"url": "v"}}
    assert merge_patch(desired, desired) == {}


def test_json_equality_tells_booleans_from_numbers() -> None:
    assert merge_patch({"a": 1}, {"a": True}) == {"a": True}
    assert not json_equal([1], [True]) and json_equal(1, 1.0) and not json_equal({"a": 1}, [1])


@given(objects_with_nulls, objects_without_nulls)
def test_applying_the_diff_reaches_the_desired_document(current: dict[str, Any], desired: dict[str, Any]) -> None:
    assert json_equal(apply_merge_patch(current, merge_patch(current, desired)), desired)


@given(documents(with_nulls=True), documents(with_nulls=False))
def test_any_documents_not_only_objects(current: Any, desired: Any) -> None:
    assert json_equal(apply_merge_patch(current, merge_patch(current, desired)), desired)


@given(objects_with_nulls, objects_without_nulls)
def test_the_patch_is_minimal(current: dict[str, Any], desired: dict[str, Any]) -> None:
    """Every member of the patch is needed: dropping any one of them misses the desired document."""
    patch = merge_patch(current, desired)
    assert (patch == {}) == json_equal(current, desired)
    for path, _ in leaves_of(patch):
        assert not json_equal(apply_merge_patch(current, without(patch, path)), desired)


@given(objects_without_nulls)
def test_the_patch_between_equal_documents_is_empty(document: dict[str, Any]) -> None:
    assert merge_patch(document, document) == {}


def leaves_of(patch: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Paths to each member a patch sets (nested objects count by their own members, if any)."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, value in patch.items():
        path = (*prefix, name)
        found.extend(leaves_of(value, path) if isinstance(value, dict) and value else [(path, value)])
    return found


def without(patch: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    head, *rest = path
    copy = dict(patch)
    if rest:
        copy[head] = without(copy[head], tuple(rest))
    else:
        del copy[head]
    return copy
