"""What the admin API reads and calls of the node: it is typed against this, never imports the node.

The node satisfies it as it is (attributes read as properties here, so the
node's own may be wider to write); a test's stand-in may carry only what the
endpoints it calls read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from connectors.registry import Resources
    from engine.admin.credentials import Credentials
    from engine.admin.lockout import AdminStats
    from engine.auth import UserStore
    from engine.config.schema import Settings
    from engine.monitor import Monitor
    from engine.ocpp.context import GatewayContext
    from engine.ocpp.listener import OcppListener
    from engine.reload import ReloadReport
    from rules.runtime import RuleEngine


class ClusterView(Protocol):
    """The cluster room (engine/cluster/) as the admin API asks it: which nodes there are, and a
    request carried to one of them (raises NodeUnreachable or RemoteError)."""

    @property
    def name(self) -> str: ...

    def nodes(self) -> dict[str, dict[str, Any]]: ...  # every node heard of, this one too: its presence

    def peers(self) -> list[str]: ...  # the other nodes that say they are running

    def serve(self, op: str, handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> None: ...

    async def request(self, node: str, op: str, args: dict[str, Any], timeout: float | None = None) -> Any: ...


class NodeView(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def config_path(self) -> str | None: ...  # what a reload from the files reads

    @property
    def ocpp(self) -> GatewayContext | None: ...  # None: OCPP is off

    @property
    def listeners(self) -> Mapping[str, OcppListener]: ...  # by full name (`ocpp:ws:default`)

    @property
    def rules(self) -> RuleEngine | None: ...  # built before the admin app

    @property
    def resources(self) -> Resources | None: ...  # built before the admin app

    @property
    def admin_credentials(self) -> Credentials | None: ...  # set before the admin app, again on each reload

    @property
    def user_store(self) -> UserStore | None: ...  # opened before the admin app

    @property
    def monitor(self) -> Monitor: ...  # samples and alarms (engine/monitor.py)

    @property
    def cluster(self) -> ClusterView | None: ...  # cluster.enable; read with getattr (stand-ins may lack it)

    admin_stats: AdminStats | None  # the admin app puts its own here for the metrics collector

    async def reload(self, settings: Settings) -> ReloadReport:
        """Apply a new, validated config; raise ReloadError with every problem (nothing changes)."""
        ...

    async def reload_from_files(self) -> ReloadReport:
        """Re-read the config file (and the overlay) and apply it; raise ReloadError if it cannot."""
        ...
