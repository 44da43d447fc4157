"""Nodes that share a broker act as one: presence, requests between nodes, takeover order."""

from engine.cluster.member import ClusterMember, NodeUnreachable, RemoteError, check_node_name

__all__ = ["ClusterMember", "NodeUnreachable", "RemoteError", "check_node_name"]
