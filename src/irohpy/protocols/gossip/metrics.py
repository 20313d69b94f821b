"""The gossip metrics group (iroh-gossip's ``gossip`` group names where they exist)."""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, MetricsGroup


class GossipMetrics(MetricsGroup, name="gossip"):
    msgs_data_sent = Counter("Broadcast (data) messages sent to peers")
    msgs_data_recv = Counter("Broadcast (data) messages received from peers")
    msgs_data_sent_size = Counter("Bytes of broadcast messages sent")
    msgs_data_recv_size = Counter("Bytes of broadcast messages received")
    msgs_ctrl_sent = Counter("Control (membership, IHave, Graft, Prune) messages sent")
    msgs_ctrl_recv = Counter("Control messages received")
    msgs_ctrl_sent_size = Counter("Bytes of control messages sent")
    msgs_ctrl_recv_size = Counter("Bytes of control messages received")
    msgs_duplicate_recv = Counter("Broadcast messages received again after we had them")
    msgs_delivered = Counter("Broadcasts handed to subscribers")
    neighbor_up = Counter("Times a peer became a neighbor in a topic")
    neighbor_down = Counter("Times a neighbor left a topic")
    neighbors = Gauge("Neighbors now, summed over topics")
