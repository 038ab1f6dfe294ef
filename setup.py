"""The wheel ships the built dashboard: ``web/dist`` goes in as ``realtime/_dashboard``.

Everything else about the package is in pyproject.toml. ``web/dist`` is built by
``make install`` (npm ci and vite build), not kept in git, so it is copied into the
build here, when a wheel is built (``pip install .``, ``make wheel``), rather than
kept twice in the tree: a checkout serves ``web/dist`` in place and never a stale
copy. An editable install (``make install``) copies nothing. Without a built
dashboard the wheel has none: the build warns, and the installed gateway says so in
its start-up log and at ``/`` (503), with what to do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DIST = Path(__file__).resolve().parent / "web" / "dist"


class BuildWithDashboard(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # served from web/dist in place
            return
        target = Path(self.build_lib) / "realtime" / "_dashboard"
        shutil.rmtree(target, ignore_errors=True)  # an earlier build's assets
        if not (DIST / "index.html").is_file():
            self.warn(f"{DIST} is not built (make install): the wheel has no dashboard")
            return
        # Dot files (the Makefile's .built stamp) are never served: leave them out.
        shutil.copytree(DIST, target, ignore=shutil.ignore_patterns(".*"))


setup(cmdclass={"build_py": BuildWithDashboard})
