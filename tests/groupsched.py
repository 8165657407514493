"""``--dist loadgroup`` that keeps working on pytest 9.2.

xdist's loadgroup learns a test's ``xdist_group`` from a suffix it writes into the test's node
id on the worker (``test_x.py::test@group``). pytest 9.2 builds node ids from a structured id
and ignores that write, so every group is silently spread over all workers
(pytest-dev/pytest-xdist#1386, open as of xdist 3.8.0). Here the workers report the groups
through a file instead (a directory the controller names in ``workerinput``), and the
controller's scheduler, xdist's own ``LoadGroupScheduling``, reads them from there; node ids
are left alone. On a pytest where xdist's suffix still works, the suffixed ids are keys like
any other. Delete this module once xdist passes groups without touching node ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadGroupScheduling

WORKERINPUT_KEY = "promptsweep_tests_group_dir"


def group_of(item: pytest.Item) -> str | None:
    """The item's group as xdist names it: its ``xdist_group`` names, sorted and joined."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "_".join(sorted(names)) or None


class GroupScheduling(LoadGroupScheduling):
    """xdist's loadgroup scheduler, grouping by what the workers reported."""

    def __init__(self, config: pytest.Config, log: Any, group_dir: Path) -> None:
        super().__init__(config, log)
        self.group_dir = group_dir
        self.groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        # First called from schedule(), after every worker has sent its collection (and so
        # has written its file: it writes it before it sends the collection).
        if self.groups is None:
            self.groups = {}
            for path in sorted(self.group_dir.glob("*.json")):
                self.groups.update(json.loads(path.read_text()))
        return self.groups.get(nodeid) or super()._split_scope(nodeid)


class GroupChannel:
    """Registered on the controller and on every worker when xdist is present."""

    def __init__(self) -> None:
        self.group_dir: Path | None = None

    @pytest.hookimpl
    def pytest_configure(self, config: pytest.Config) -> None:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None:
            named = workerinput.get(WORKERINPUT_KEY)
            self.group_dir = Path(named) if named else None
        elif config.getoption("dist", "no") == "loadgroup":
            self.group_dir = Path(tempfile.mkdtemp(prefix="xdist-groups-"))

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.group_dir is not None and not hasattr(config, "workerinput"):
            shutil.rmtree(self.group_dir, ignore_errors=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.group_dir is not None:
            node.workerinput[WORKERINPUT_KEY] = str(self.group_dir)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> GroupScheduling | None:
        if self.group_dir is None:
            return None
        return GroupScheduling(config, log, self.group_dir)

    @pytest.hookimpl(trylast=True)  # after every hook that adds xdist_group marks
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        workerinput = getattr(config, "workerinput", None)
        if self.group_dir is None or workerinput is None:
            return
        groups = {item.nodeid: group for item in items if (group := group_of(item))}
        target = self.group_dir / f"{workerinput['workerid']}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups))
        os.replace(temporary, target)
