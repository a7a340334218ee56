"""The agent's collector across a control-plane outage: rounds are kept, then all delivered.

A real collector (the host's psutil figures, the local Docker engine, NVML where present)
sends to an address where nothing listens, then to the live server: every round collected
meanwhile is stored with its own collection time, so the chart has no gap.
"""

from __future__ import annotations

import socket

import pytest

from fleet.agent.metrics.collector import Collector
from fleet.agent.state import AgentState
from monitoring.models import Sample
from tests.monitoring.support import joined_node

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_rounds_collected_during_an_outage_are_delivered_after_it(live_server, tmp_path):
    node, credential = joined_node("outage-a")
    down = f"http://127.0.0.1:{closed_port()}"
    AgentState(
        server=down,
        node_id=node.pk,
        name=node.name,
        credential=credential,
        queue=f"node.{node.pk}",
        broker_url="redis://127.0.0.1:6379/5",
    ).save(tmp_path)
    collector = Collector(server=down, data_dir=tmp_path, node_id=str(node.pk), buffer_rounds=4)
    try:
        times = []
        for _ in range(5):
            times.append(collector.collect()["t"])
            assert collector.flush() is False  # unreachable: kept
        assert len(collector.buffer) == 4 and collector.buffer.dropped == 1  # bounded
        assert not Sample.objects.exists()

        collector.client.server = live_server.url  # the control plane is back
        assert collector.flush() is True
        assert len(collector.buffer) == 0
        stored = sorted(
            int(ts.timestamp() * 1000)
            for ts in Sample.objects.filter(
                series__node=node, series__name="memory_used_bytes"
            ).values_list("ts", flat=True)
        )
        assert stored == times[1:]  # the oldest round went when the buffer was full
        disk = Sample.objects.filter(series__name="disk_total_bytes").values_list(
            "value", flat=True
        )
        assert min(disk) > 0
    finally:
        collector.close()
