"""The sync path's import breakdown adds up to what importing it all at once costs."""

from __future__ import annotations

import sys

from benchmarks.process_bench import SYNC_IMPORT_LAYERS, SYNC_IMPORTS, base_env, import_layers, run_once


def test_the_import_layers_add_up_to_the_sync_paths_imports() -> None:
    env = base_env()
    layers = import_layers(env)
    assert [name for name, _ in layers] == ["Python", *(name for name, _ in SYNC_IMPORT_LAYERS)]
    assert all(mb > 0 for _, mb in layers)  # each layer loads something the layers before it did not
    together = run_once([sys.executable, "-c", SYNC_IMPORTS], env).rss_mb
    assert abs(sum(mb for _, mb in layers) - together) < 3  # the same modules, whichever order loads them
