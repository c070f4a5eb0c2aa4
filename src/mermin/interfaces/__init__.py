"""Interface discovery: name patterns, the netlink watcher, and attach bookkeeping.

`InterfaceManager(instrument_config, attacher)` attaches the datapath to every interface whose
name matches `discovery "instrument"` patterns, in the host network namespace, and keeps doing
so as interfaces come and go. See docs/interfaces.md.
"""

from mermin.interfaces.hostns import enter_netns, resolve_netns, same_netns, setns
from mermin.interfaces.manager import AttacherLike, InterfaceManager, InterfaceStats
from mermin.interfaces.patterns import (
    DEFAULT_INTERFACE_PATTERNS,
    InterfaceMatcher,
    check_pattern,
    compile_pattern,
)
from mermin.interfaces.watcher import Link, LinkEvent, LinkSocket, LinkWatcher, WatcherStats

__all__ = [
    "DEFAULT_INTERFACE_PATTERNS",
    "AttacherLike",
    "InterfaceManager",
    "InterfaceMatcher",
    "InterfaceStats",
    "Link",
    "LinkEvent",
    "LinkSocket",
    "LinkWatcher",
    "WatcherStats",
    "check_pattern",
    "compile_pattern",
    "enter_netns",
    "resolve_netns",
    "same_netns",
    "setns",
]
