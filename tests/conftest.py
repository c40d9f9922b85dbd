"""How `make test` (`pytest -n 2 --dist loadgroup`) shares the suite between workers.

Two rules, both about wall time on two cores:

- A module whose tests share a module-scoped fixture (a trained model, a
  two-worker cluster, an export) runs on one worker, so the fixture is built
  once rather than once per worker: its tests get an `xdist_group` named
  after the module.
- The longest tests start first, so that no worker is left alone with a
  several-minute test at the end while the other has nothing to do.
"""

import pytest

# The slowest files, longest first (minutes each on two cores).
FIRST = (
    "tests/test_demo.py",
    "tests/test_readme.py",
    "tests/test_distribute.py",
    "tests/test_cli.py",
)


def _file_of(item):
    return item.nodeid.split("::")[0]


def _uses_module_fixture(item):
    definitions = item._fixtureinfo.name2fixturedefs.values()
    return any(d.scope == "module" for chain in definitions for d in chain)


def _start_rank(item):
    path = _file_of(item)
    if path in FIRST:
        return FIRST.index(path)
    return len(FIRST) if item.get_closest_marker("slow") else len(FIRST) + 1


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the groups.
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(_file_of(item)))
    items.sort(key=_start_rank)
