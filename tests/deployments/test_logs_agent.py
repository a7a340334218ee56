"""The agent's replica_logs module (no Django): timestamps, since, and a fake container."""

from __future__ import annotations

from typing import Any

from fleet.agent import replica_logs


def test_lines_are_normalised_to_fixed_width_utc_stamps() -> None:
    raw = (
        b"2025-01-02T03:04:05.1234Z first\n"
        b"continued without a stamp\n"
        b"2025-01-02T03:04:06Z second\n"
        b"2025-01-02T04:04:07.5+01:00 third\n"
    )
    assert replica_logs.parse_lines(raw) == [
        "2025-01-02T03:04:05.123400000Z first continued without a stamp",
        "2025-01-02T03:04:06.000000000Z second",
        "2025-01-02T03:04:07.500000000Z third",
    ]


def test_since_is_the_stamp_in_unix_seconds() -> None:
    assert replica_logs.since_seconds("") is None
    assert replica_logs.since_seconds("2025-01-02T03:04:05.250000000Z text") == 1735787045.25


class FakeContainer:
    id = "0123456789abcdef"
    status = "running"
    attrs: dict[str, Any] = {"RestartCount": 2, "State": {"StartedAt": "2025-01-02T03:04:00Z"}}

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def logs(self, **kwargs: Any) -> bytes:
        self.calls.append(kwargs)
        return b"2025-01-02T03:04:05.1Z llama server listening\n"


class FakeDriver:
    def __init__(self, container: Any) -> None:
        self.container = container

    def sdk(self) -> Any:
        driver = self

        class Containers:
            def get(self, name: str) -> Any:
                from docker.errors import NotFound

                if driver.container is None:
                    raise NotFound("no such container")
                return driver.container

        class Client:
            containers = Containers()

        return Client()


def test_read_logs_asks_docker_for_stamped_lines_since() -> None:
    container = FakeContainer()
    result = replica_logs.read_logs(
        "fleet-x", tail=5000, since="2025-01-02T03:04:05.000000000Z a", driver=FakeDriver(container)
    )
    assert result["found"] and result["restarts"] == 2 and result["tail"] == 1000
    assert result["lines"] == ["2025-01-02T03:04:05.100000000Z llama server listening"]
    call = container.calls[0]
    assert call["timestamps"] and call["tail"] == 1000 and call["since"] == 1735787045.0


def test_read_logs_of_a_missing_container() -> None:
    result = replica_logs.read_logs("gone", tail=10, since="", driver=FakeDriver(None))
    assert result == {"container": "gone", "found": False, "lines": [], "restarts": 0}


def test_the_worker_registers_the_task() -> None:
    from fleet.agent.worker import app

    assert "fleet.agent.replica_logs" in app.tasks
