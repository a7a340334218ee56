"""The agent's metric collection: every few seconds, per replica and per node, sent in batches.

- ``prometheus``: parse a runtime's Prometheus text;
- ``normalise``: apply the runtime's table (from the container's ``fleet.metrics`` label)
  to turn its names into the fleet's series;
- ``sources``: the Docker engine's container figures, the host's CPU/RAM/disk and GPUs;
- ``collector``: the loop, the bounded outage buffer and the batched send.

Like the rest of ``fleet.agent``: no Django, no database.
"""
