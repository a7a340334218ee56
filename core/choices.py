from django.db import models


class Role(models.TextChoices):
    """What a user may do. Each role includes the ones below it."""

    # Manages users, other people's tokens and settings, and everything an operator does.
    ADMIN = "admin", "Admin"
    # Changes the fleet, the catalog and deployments.
    OPERATOR = "operator", "Operator"
    # Reads everything that is not secret; changes nothing.
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class TokenScope(models.TextChoices):
    # Safe methods only (GET, HEAD, OPTIONS), whatever the owner's role.
    READ = "read", "Read"
    # Everything the owner's role allows.
    WRITE = "write", "Read and write"


class ActorType(models.TextChoices):
    # A person signed in to the console.
    USER = "user", "User"
    # A person's personal API token (automation).
    TOKEN = "token", "API token"
    # A node agent authenticated with its node credential.
    NODE = "node", "Node"
    # The control plane itself: reconcilers, periodic tasks, management commands.
    SYSTEM = "system", "System"


class SecretKind(models.TextChoices):
    HUGGINGFACE_TOKEN = "huggingface_token", "Hugging Face token"
    REGISTRY_CREDENTIAL = "registry_credential", "Container registry credential"
    GENERIC = "generic", "Generic"
