"""Download jobs on the node: a catalog variant into the node's Hugging Face hub cache.

Runs inside the agent's Celery worker; no Django. The control plane's row is the record:
the agent claims the job over the API (the answer describes what to fetch), reports
progress about twice a second (each answer renews the lease and says whether to stop),
and reports the outcome. A duplicate or late message finds the job unclaimable and returns.

Layout: ``<data_dir>/hub`` is a standard hub cache (``models--org--name/blobs/<etag>``,
``snapshots/<commit>/<path>`` symlinks, ``refs/<revision>``), so runtimes can mount it and
``huggingface_hub`` finds the files offline. Metadata comes from ``huggingface_hub``'s
``get_hf_file_metadata`` (same endpoints, headers and error types as ``hf_hub_download``);
the bytes are fetched here, because ``huggingface_hub`` 2.x writes to a process-unique
temporary file and deletes it on failure, so it cannot resume after an agent restart. Here
the partial file is ``blobs/<etag>.incomplete``, kept across crashes and resumed with a
``Range`` request.

Every file is checked: paths from the catalog must stay inside the cache (no ``..``, no
absolute paths, no NUL), the disk must hold what is missing before anything is written,
and each file's sha256 must match the catalog's (a mismatch is downloaded once more, then
the job fails and nothing is marked present).

Modules: ``spec`` (errors, the file list, path and checksum checks), ``progress`` (counters and
the reporter thread), ``remote`` (hub metadata and resumable GETs), ``cache`` (the hub cache
layout, disk space), ``job`` (the download job), ``delete`` (removing a variant).
"""

from fleet.agent.downloads.cache import HubCache, disk_margin, free_bytes
from fleet.agent.downloads.delete import delete_files
from fleet.agent.downloads.job import FINISH_RETRY_S, Downloader, run_job
from fleet.agent.downloads.progress import JobsApi, Progress, Reporter
from fleet.agent.downloads.remote import (
    CHUNK,
    READ_TIMEOUT_S,
    STREAM_RETRIES,
    RemoteFile,
    fetch,
    remote_file,
)
from fleet.agent.downloads.spec import (
    DEFAULT_PROGRESS_INTERVAL_S,
    HASH_CHUNK,
    Cancelled,
    DownloadError,
    DownloadSpec,
    FileSpec,
    LeaseLost,
    check_relative_path,
    file_digest,
    matches,
    repo_folder,
)

__all__ = [
    "CHUNK",
    "DEFAULT_PROGRESS_INTERVAL_S",
    "FINISH_RETRY_S",
    "HASH_CHUNK",
    "READ_TIMEOUT_S",
    "STREAM_RETRIES",
    "Cancelled",
    "DownloadError",
    "DownloadSpec",
    "Downloader",
    "FileSpec",
    "HubCache",
    "JobsApi",
    "LeaseLost",
    "Progress",
    "RemoteFile",
    "Reporter",
    "check_relative_path",
    "delete_files",
    "disk_margin",
    "fetch",
    "file_digest",
    "free_bytes",
    "matches",
    "remote_file",
    "repo_folder",
    "run_job",
]
