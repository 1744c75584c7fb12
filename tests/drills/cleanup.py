"""``python -m tests.drills.cleanup``: remove what partition-drill runs that are gone left
behind (namespaces ``spd<pid>-*`` whose pid no longer runs, with their links, rules and
processes). Never touches a running drill's namespaces."""

from __future__ import annotations

from tests.drills.netns import cleanup_leftovers

if __name__ == "__main__":
    for name in cleanup_leftovers():
        print(f"removed network namespace {name}")
