"""Create the first admin if there is none (used by the run command and by installs)."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import services
from core.change_context import ChangeContext
from core.choices import Role
from core.errors import ServiceError
from core.models import User


class Command(BaseCommand):
    help = (
        "Create the first admin unless an active admin exists. The password comes from "
        "FLEET_ADMIN_PASSWORD, or a one-time password is generated and printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        existing = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(f"An admin exists already ({existing.username}); nothing to do.")
            return
        password = os.environ.get("FLEET_ADMIN_PASSWORD") or None
        try:
            user, generated = services.create_user(
                ChangeContext.system("setup", reason="first admin"),
                username=options["username"],
                email=options["email"],
                role=Role.ADMIN,
                password=password,
            )
        except ServiceError as error:
            hint = " (FLEET_ADMIN_PASSWORD)" if error.field == "password" else ""
            raise CommandError(f"Cannot create the admin{hint}: {error.message}") from None
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin '{user.username}' with the one-time password: {generated}\n"
                    "It is shown only now; change it under Settings → Password after signing in."
                )
            )
        else:
            self.stdout.write(
                f"Created admin '{user.username}' with the password from FLEET_ADMIN_PASSWORD."
            )
