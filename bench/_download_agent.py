"""The resume measurement of bench/download.py with a real agent and a real download job.

A Celery worker and beat for the control plane (the job reconciler re-queues a job whose
agent stopped renewing its lease), one agent (``manage.py fleet_agent``) joined through
nginx, and ``models_catalog.downloads.put_variant_on_nodes`` for it. The agent's process
group is SIGKILLed once ``--kill-at`` of the model is on its disk, the agent started again
on the same data dir, and the job followed to the end. nginx's access log gives the bytes
sent for ``/hub/`` requests over the whole job.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Protocol

from _common import PY, Proc, log, wait_for
from _download_support import MB, REPO_ID, read_access_log

AGENT_NAME = "bench-dl"


class ResumeBench(Protocol):
    """What :func:`resume_agent` needs of bench/download.py's ``Bench`` (typed here, so this
    module does not import the script that imports it)."""

    args: argparse.Namespace  # reads ``kill_at``
    tmp: Path
    env: dict[str, str]
    added_env: set[str]  # the control plane's settings, kept from the agent's environment
    db: str
    procs: list[Proc]
    ports: dict[str, int]
    ngx: Path
    variant_id: int | None
    model_bytes: int

    def on_disk(self, folder: Path) -> tuple[int, int]: ...


def resume_agent(bench: ResumeBench) -> dict[str, Any]:
    from core.history import ChangeContext
    from core.jobs import FINISHED_STATES, Job, JobState
    from fleet import services as fleet_services
    from fleet.models import Node
    from models_catalog.downloads import put_variant_on_nodes
    from models_catalog.models import NodeModel, Variant

    tmp, env = bench.tmp, bench.env
    ctx = ChangeContext.system("bench")
    _, join_key = fleet_services.create_join_token(ctx, name="bench-download", max_uses=1)
    celery = [PY, "-m", "celery", "-A", "config"]
    worker = [*celery, "worker", "-Q", "control,celery", "-c", "1", "-n", f"{bench.db}@%h"]
    beat = [*celery, "beat", "-s", str(tmp / "celerybeat-schedule")]
    control = [
        Proc("celery-worker", [*worker, "-l", "info"], env, tmp / "celery-worker.log"),
        Proc("celery-beat", [*beat, "-l", "info"], env, tmp / "celery-beat.log"),
    ]
    bench.procs.extend(control)
    # an agent runs on another host: none of the control plane's settings
    agent_env = {k: v for k, v in env.items() if k not in bench.added_env}
    data_dir = tmp / "agent"
    server = f"http://127.0.0.1:{bench.ports['mirror']}"  # through nginx, as in production
    argv = [PY, "manage.py", "fleet_agent", "--server", server, "--join-token", join_key]
    argv += ["--name", AGENT_NAME, "--data-dir", str(data_dir)]

    def start_agent(attempt: int) -> Proc:
        agent = Proc(f"agent-{attempt}", argv, agent_env, tmp / f"agent-{attempt}.log")
        bench.procs.append(agent)
        return agent

    agent = start_agent(1)

    def joined() -> bool:
        for proc in (agent, *control):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        return Node.objects.filter(name=AGENT_NAME, last_heartbeat_at__isnull=False).exists()

    wait_for(joined, 120, "the agent to join and send a heartbeat", step=0.3)
    node = Node.objects.get(name=AGENT_NAME)
    variant = Variant.objects.get(pk=bench.variant_id)
    blobs = data_dir / "hub" / ("models--" + REPO_ID.replace("/", "--")) / "blobs"
    log_path = bench.ngx / "access.log"
    offset = log_path.stat().st_size
    started = time.monotonic()
    (job,) = put_variant_on_nodes(ctx, variant, [node])
    log(f"  download job #{job.pk} for {node.name}; waiting for ~{100 * bench.args.kill_at:.0f}%")

    target = bench.args.kill_at * bench.model_bytes
    fraction = 0.0
    polls = 0
    deadline = time.monotonic() + 300
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not reach the kill point in 300 s")
        if not agent.alive():
            raise RuntimeError(f"the agent exited before the kill:\n{agent.tail()}")
        if polls % 20 == 0:
            job.refresh_from_db()
            if job.state in FINISHED_STATES:
                raise RuntimeError(
                    f"download job #{job.pk} {job.state} before the kill: {job.error}"
                )
        polls += 1
        done, _ = bench.on_disk(blobs) if blobs.exists() else (0, 0)
        if done >= target:
            agent.kill_group()
            fraction = done / bench.model_bytes
            break
        time.sleep(0.005)
    killed_at = time.monotonic()
    agent.stop(grace=0)
    bench.procs.remove(agent)
    on_disk, partials = bench.on_disk(blobs)
    log(
        f"  killed the agent at {100 * fraction:.1f}% on disk ({partials} .incomplete files, "
        f"{on_disk / MB:.0f} MB); starting it again"
    )
    agent = start_agent(2)

    def finished() -> bool:
        if not agent.alive():
            raise RuntimeError(f"the restarted agent exited:\n{agent.tail()}")
        return Job.objects.filter(pk=job.pk, state__in=FINISHED_STATES).exists()

    wait_for(finished, 600, f"download job #{job.pk} to finish", step=0.25)
    ended = time.monotonic()
    job.refresh_from_db()
    if job.state != JobState.SUCCEEDED:
        raise RuntimeError(f"download job #{job.pk} {job.state}: {job.error}")
    placed = NodeModel.objects.get(node=node, variant=variant)
    time.sleep(0.5)  # nginx logs a request when it ends
    entries = read_access_log(log_path, offset, bench.ports["mirror"])
    hub = [e for e in entries if e["uri"].startswith("/hub/")]
    sent = sum(e["bytes"] for e in hub)
    leftover = sorted(p.name for p in blobs.glob("*.incomplete"))
    for proc in (agent, *reversed(control)):
        proc.stop(grace=5)
        bench.procs.remove(proc)
    return {
        "path": "agent",
        "downloader": "manage.py fleet_agent running a download job from put_variant_on_nodes",
        "killed_at_fraction": round(fraction, 3),
        "bytes_sent": sent,
        "bytes_sent_all_requests": sum(e["bytes"] for e in entries),
        "ratio": round(sent / bench.model_bytes, 4),
        "range_requests": sum(1 for e in hub if e["range"] not in ("", "-")),
        "leftover_incomplete_files": len(leftover),
        "leftover_incomplete_bytes": sum((blobs / n).stat().st_size for n in leftover),
        "job_attempts": job.attempts,
        "kill_to_done_s": round(ended - killed_at, 1),
        "job_total_s": round(ended - started, 1),
        "node_model_state": placed.state,
        "restart_seconds": round(ended - killed_at, 1),
    }
