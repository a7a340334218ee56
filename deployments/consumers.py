"""Live deployment pages: what the reconciler pushes, for the list and detail pages.

The messages are small notices (a replica's state, a rollout's progress, the deployment's
state); pages re-render their live part from the server when one arrives, so nothing is
rendered twice and a missed message costs nothing but a moment (pages also refresh when
their socket reconnects).
"""

from __future__ import annotations

import re
from typing import Any

from core.consumers import FleetConsumer
from core.live import DEPLOYMENTS_GROUP


class DeploymentsConsumer(FleetConsumer):
    """``deployments``: every change to any deployment (one notice per reconcile pass and
    deployment); subscribe to ``deployment.<id>`` for its replicas and rollouts."""

    fixed_groups = (DEPLOYMENTS_GROUP,)
    subscribable = re.compile(r"^deployment\.\d{1,18}$")

    async def deployments_changed(self, message: dict[str, Any]) -> None:
        await self.forward(message)

    async def deployment_replica(self, message: dict[str, Any]) -> None:
        await self.forward(message)

    async def deployment_rollout(self, message: dict[str, Any]) -> None:
        await self.forward(message)

    async def deployment_state(self, message: dict[str, Any]) -> None:
        await self.forward(message)

    async def deployment_deleted(self, message: dict[str, Any]) -> None:
        await self.forward(message)
