"""Node credentials (``Authorization: Bearer slmn_…``) for the agent endpoints only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from fleet.models import NODE_CREDENTIAL_PREFIX, Node
from fleet.services import authenticate_node


class NodePrincipal:
    """Stands in for ``request.user`` on agent requests; holds no role, so user APIs refuse it."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    pk = None
    role = None

    def __init__(self, node: Node) -> None:
        self.node = node

    def has_role(self, role: str) -> bool:
        return False

    def get_username(self) -> str:
        return f"node:{self.node.name}"


class NodeCredentialAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[NodePrincipal, Node] | None:
        parts = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return None
        if not parts[1].startswith(NODE_CREDENTIAL_PREFIX):
            return None
        node = authenticate_node(parts[1])
        if node is None:
            raise exceptions.AuthenticationFailed(
                "This node's credential is not accepted: the node was deleted or its credential "
                "replaced. Join again with a new join token."
            )
        return NodePrincipal(node), node

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="agent"'


class IsNode(BasePermission):
    message = "Only a node agent with its node credential may call this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Node)


class NodeCredentialScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "fleet.authentication.NodeCredentialAuthentication"
    name = "nodeCredential"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Node credential (agents)"}
