"""The mirror's routes: model info, tree, paths-info, refs, commits and file resolve.

A repository is a :class:`CatalogModel`; its only revisions are the pinned commit and the
name it was imported from (``requested_revision``, e.g. "main"), which resolves to the pin.
A file is served only as the store blob of a :class:`ModelFile` row, never from a path built
out of the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import urlencode

from models_catalog import store
from models_catalog.mirror import protocol
from models_catalog.mirror.access import error_response, hub_view
from models_catalog.mirror.files import RangeFile
from models_catalog.models import CatalogModel, ModelFile

READ = ("GET", "HEAD")
R = TypeVar("R", bound=HttpResponseBase)


@dataclass
class Repo:
    model: CatalogModel
    files: list[ModelFile]

    @property
    def sha(self) -> str:
        return self.model.commit_sha

    def entries(self) -> list[protocol.RepoFile]:
        return [_entry(row) for row in self.files]

    def last_commit(self) -> dict[str, str]:
        return {"id": self.sha, "title": _title(self.model), "date": _date(self.model)}


def _entry(row: ModelFile) -> protocol.RepoFile:
    # The git blob sha1 is the cache name of a non-LFS file; a row without one (an import
    # that did not record it) falls back to its sha256, which the client accepts as well.
    blob_id = row.blob_id or row.sha256
    return protocol.RepoFile(row.path, row.size, row.sha256, blob_id, row.lfs)


def _title(model: CatalogModel) -> str:
    return f"{model.repo_id} pinned by the fleet catalog"


def _date(model: CatalogModel) -> str:
    return protocol.timestamp(model.last_synced_at or model.imported_at)


def _model(org: str, name: str) -> CatalogModel | JsonResponse:
    repo_id = f"{org}/{name}"
    model = None
    if protocol.valid_repo_id(repo_id):
        model = CatalogModel.objects.filter(repo_id=repo_id).first()
    if model is None:
        message = f"{repo_id} is not in the fleet catalog."
        return error_response(404, protocol.REPO_NOT_FOUND, message)
    return model


def _at(model: CatalogModel, revision: str | None) -> Repo | JsonResponse:
    if revision is not None and revision not in _revisions(model):
        return error_response(
            404,
            protocol.REVISION_NOT_FOUND,
            f"{model.repo_id} is pinned to {model.commit_sha} ({model.requested_revision}); "
            f"the mirror has no revision {revision!r}.",
        )
    return Repo(model, list(model.files.order_by("path")))


def _repo(org: str, name: str, revision: str | None) -> Repo | JsonResponse:
    model = _model(org, name)
    return model if isinstance(model, JsonResponse) else _at(model, revision)


def _repo_and_path(org: str, name: str, rest: str) -> tuple[Repo, str] | JsonResponse:
    """For ``{revision}/{path}`` URLs, where the revision may hold slashes itself."""
    model = _model(org, name)
    if isinstance(model, JsonResponse):
        return model
    revision, path = protocol.split_revision(rest, _revisions(model))
    repo = _at(model, revision)
    return repo if isinstance(repo, JsonResponse) else (repo, path)


def _revisions(model: CatalogModel) -> set[str]:
    return {model.commit_sha, model.requested_revision} - {""}


def _flag(request: HttpRequest, name: str) -> bool:
    return request.GET.get(name, "").lower() in ("1", "true", "yes")


# --- API --------------------------------------------------------------------------------------
@hub_view(READ)
def model_info(
    request: HttpRequest, org: str, name: str, revision: str | None = None
) -> HttpResponse:
    repo = _repo(org, name, revision)
    if isinstance(repo, HttpResponse):
        return repo
    model = repo.model
    extra: dict[str, Any] = {
        "private": model.private,
        "gated": False,  # the fleet holds the access; whoever reaches the mirror may read
        "downloads": model.downloads or 0,
        "tags": list(model.tags or []),
        "pipeline_tag": model.task or None,
        "library_name": model.library or None,
        "lastModified": _date(model),
        "createdAt": protocol.timestamp(model.imported_at),
        "usedStorage": model.total_size,
        "cardData": {"license": model.licence} if model.licence else {},
    }
    if isinstance(model.config, dict) and model.config:
        extra["config"] = model.config
    body = protocol.model_info(
        repo_id=model.repo_id,
        sha=repo.sha,
        files=repo.entries(),
        blobs=_flag(request, "blobs"),
        extra=extra,
    )
    return JsonResponse(body)


@hub_view(READ)
def tree(request: HttpRequest, org: str, name: str, rest: str) -> HttpResponse:
    found = _repo_and_path(org, name, rest)
    if isinstance(found, HttpResponse):
        return found
    repo, path = found
    if path and protocol.clean_path(path) is None:
        return error_response(400, None, "Invalid path in repository.")
    expand = _flag(request, "expand")
    entries = protocol.tree(
        repo.entries(),
        path,
        recursive=_flag(request, "recursive"),
        last_commit=repo.last_commit() if expand else None,
    )
    if entries is None:
        return error_response(
            404,
            protocol.ENTRY_NOT_FOUND,
            f"{path} does not exist in {repo.model.repo_id} at {repo.sha}.",
            {"X-Repo-Commit": repo.sha},
        )
    limit = protocol.TREE_PAGE_EXPANDED if expand else protocol.TREE_PAGE
    items, cursor = protocol.page(entries, request.GET.get("cursor"), limit)
    response = JsonResponse(items, safe=False)
    if cursor is not None:
        query = urlencode({**request.GET.dict(), "cursor": cursor})
        response["Link"] = f'<{request.build_absolute_uri(request.path)}?{query}>; rel="next"'
    return response


@hub_view(("POST",))
def paths_info(request: HttpRequest, org: str, name: str, revision: str) -> HttpResponse:
    repo = _repo(org, name, revision)
    if isinstance(repo, HttpResponse):
        return repo
    expand = request.POST.get("expand", "").lower() in ("1", "true")
    body = protocol.paths_info(
        repo.entries(),
        request.POST.getlist("paths"),
        last_commit=repo.last_commit() if expand else None,
    )
    return JsonResponse(body, safe=False)


@hub_view(READ)
def refs(request: HttpRequest, org: str, name: str) -> HttpResponse:
    repo = _repo(org, name, None)
    if isinstance(repo, HttpResponse):
        return repo
    model = repo.model
    branch = model.requested_revision
    branches = {branch: repo.sha} if branch and branch != repo.sha else {}
    return JsonResponse(protocol.refs(branches, include_prs=_flag(request, "include_prs")))


@hub_view(READ)
def commits(request: HttpRequest, org: str, name: str, revision: str) -> HttpResponse:
    repo = _repo(org, name, revision)
    if isinstance(repo, HttpResponse):
        return repo
    model = repo.model
    author = model.imported_by.username if model.imported_by else "slm-fleet"
    entry = protocol.commit(repo.sha, title=_title(model), date=_date(model), author=author)
    return JsonResponse([entry], safe=False)


@hub_view(READ)
def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    return error_response(
        404, protocol.REPO_NOT_FOUND, "The mirror serves model repositories only."
    )


# --- Files ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """What resolving a file needs of a repository: its pin, revisions and files by path.

    Plain data, so the ASGI fast path (:mod:`models_catalog.mirror.asgi_fastpath`) can keep
    it for a few seconds between the requests of one download.
    """

    repo_id: str
    sha: str
    requested_revision: str
    revisions: frozenset[str]
    files: dict[str, protocol.RepoFile]


def load_snapshot(org: str, name: str) -> Snapshot | None:
    """The repository ``org/name`` from the catalog (two queries), or None if it is not there."""
    model = _model(org, name)
    if isinstance(model, JsonResponse):
        return None
    return Snapshot(
        repo_id=model.repo_id,
        sha=model.commit_sha,
        requested_revision=model.requested_revision,
        revisions=frozenset(_revisions(model)),
        files={row.path: _entry(row) for row in model.files.order_by("path")},
    )


def is_stored(file: protocol.RepoFile) -> bool:
    return bool(protocol.SHA256.match(file.sha256)) and store.has_blob(file.sha256)


def locate(
    snapshot: Snapshot | None,
    org: str,
    name: str,
    rest: str,
    stored: Callable[[protocol.RepoFile], bool] = is_stored,
) -> tuple[str, protocol.RepoFile] | JsonResponse:
    """The commit and file a ``{revision}/{path}`` names, or the error to answer."""
    if snapshot is None:
        message = f"{org}/{name} is not in the fleet catalog."
        return error_response(404, protocol.REPO_NOT_FOUND, message)
    revision, raw_path = protocol.split_revision(rest, snapshot.revisions)
    if revision not in snapshot.revisions:
        return error_response(
            404,
            protocol.REVISION_NOT_FOUND,
            f"{snapshot.repo_id} is pinned to {snapshot.sha} ({snapshot.requested_revision}); "
            f"the mirror has no revision {revision!r}.",
        )
    path = protocol.clean_path(raw_path)
    if path is None:
        return error_response(400, None, "Invalid path in repository.")
    file = snapshot.files.get(path)
    if file is None:
        return error_response(
            404,
            protocol.ENTRY_NOT_FOUND,
            f"{path} does not exist in {snapshot.repo_id} at {snapshot.sha}.",
            {"X-Repo-Commit": snapshot.sha},
        )
    if not stored(file):
        # No X-Repo-Commit: the client would cache the file as non-existent for this commit.
        return error_response(
            404,
            protocol.ENTRY_NOT_FOUND,
            f"{path} of {snapshot.repo_id} is in the catalog but not cached in the fleet "
            "store yet: download its variant to the control plane first.",
        )
    return snapshot.sha, file


@hub_view(READ)
def resolve(request: HttpRequest, org: str, name: str, rest: str) -> HttpResponseBase:
    found = locate(load_snapshot(org, name), org, name, rest)
    if isinstance(found, HttpResponse):
        return found
    return serve(request, *found)


def accel_location(file: protocol.RepoFile, accel: str) -> str:
    """The internal location nginx serves ``file``'s store blob from (X-Accel-Redirect)."""
    relative = store.blob_path(file.sha256).relative_to(store.root()).as_posix()
    return f"{accel.rstrip('/')}/{relative}"


def serve(request: HttpRequest, commit_sha: str, file: protocol.RepoFile) -> HttpResponseBase:
    """HEAD: metadata only. GET: the store blob, whole or one byte range."""
    headers = protocol.file_headers(commit_sha, file)
    if request.method == "HEAD":
        return _with(HttpResponse(), headers)
    accel = settings.FLEET_MIRROR_ACCEL_REDIRECT
    if accel:  # nginx sends the bytes (and handles Range) from its internal location
        headers.pop("Content-Length")
        return _with(HttpResponse(), {**headers, "X-Accel-Redirect": accel_location(file, accel)})
    blob = store.blob_path(file.sha256)
    try:
        wanted = protocol.parse_range(
            request.headers.get("Range"),
            file.size,
            if_range=request.headers.get("If-Range"),
            etag=file.etag,
        )
    except protocol.Unsatisfiable:
        refusal = error_response(
            416, None, f"Range not satisfiable: the file has {file.size} bytes."
        )
        refusal["Content-Range"] = f"bytes */{file.size}"
        return refusal
    span = wanted or protocol.ByteRange(0, file.size)
    response = _stream(request, blob, span)
    response.status_code = 206 if wanted else 200
    headers["Content-Length"] = str(span.stop - span.start)
    if wanted:
        headers["Content-Range"] = wanted.content_range(file.size)
    return _with(response, headers)


def _stream(request: HttpRequest, blob: Path, span: protocol.ByteRange) -> HttpResponseBase:
    if isinstance(request, ASGIRequest):
        # An async iterator: Django's ASGI handler would read a sync one into memory whole.
        return StreamingHttpResponse(protocol.aread_chunks(blob, span.start, span.stop))
    # WSGI: a file object for the server's wsgi.file_wrapper; the whole file as a real file,
    # which gunicorn sends with sendfile(2), a range through a window without a descriptor.
    whole = span.start == 0 and span.stop == blob.stat().st_size
    response = FileResponse(blob.open("rb") if whole else RangeFile(blob, span.start, span.stop))
    response.block_size = protocol.CHUNK
    return response


def _with(response: R, headers: dict[str, str]) -> R:
    for name, value in headers.items():
        response[name] = value
    return response
