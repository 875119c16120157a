"""JSON Merge Patch (RFC 7396): apply a patch, and compute the smallest patch between two documents.

Merge Patch merges objects member by member, replaces arrays and scalars whole, and uses ``null``
to delete a member, so a document holding ``null`` values cannot be reached by a patch; the
records datasync publishes never hold one.
"""

from __future__ import annotations

from typing import Any


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """The document ``target`` becomes when ``patch`` is applied (RFC 7396 section 2); inputs untouched."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = apply_merge_patch(result.get(name), value)
    return result


def merge_patch(current: Any, desired: Any) -> Any:
    """The minimal patch turning ``current`` into ``desired``: changed members only, ``{}`` if none.

    Members missing from ``desired`` become ``null``; arrays and scalars that differ are sent whole;
    objects present on both sides are diffed member by member.
    """
    if not isinstance(desired, dict) or not isinstance(current, dict):
        return desired
    patch: dict[str, Any] = {name: None for name in current if name not in desired}
    for name, value in desired.items():
        if name not in current:
            patch[name] = value
        elif isinstance(value, dict) and isinstance(current[name], dict):
            nested = merge_patch(current[name], value)
            if nested:
                patch[name] = nested
        elif not json_equal(current[name], value):
            patch[name] = value
    return patch


def json_equal(left: Any, right: Any) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1`` (Python says ``True == 1``), ``1`` is ``1.0``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return False
    return bool(left == right)
