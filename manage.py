#!/usr/bin/env python
import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["fleet_agent"]:
        # The node agent runs without Django: no settings, models or database on the host.
        from fleet.agent.cli import main as agent_main

        sys.exit(agent_main(sys.argv[2:]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
