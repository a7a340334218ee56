"""Catalog use cases: import from the hub, re-sync and re-pin, delete, the licence policy.

Hub calls happen before the transaction opens (a slow hub never holds database locks);
each change is then written atomically with its history event.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ConflictError, ServiceError, check_version
from core.history import ChangeContext, diff, record, snapshot
from core.models import Setting
from core.services import BEARER_SHAPE, is_bearer_token, reveal_secret
from models_catalog import hub, references
from models_catalog.choices import ParameterSource
from models_catalog.fits import fits_on, reserved_bytes  # noqa: F401  (part of this API)
from models_catalog.footprint import Architecture, architecture_from_config, estimate_parameters
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant
from models_catalog.variants import detect_variants

ALLOWED_LICENCES_KEY = "catalog.allowed_licences"
MODEL_FIELDS = (
    "repo_id",
    "requested_revision",
    "commit_sha",
    "licence",
    "gated",
    "private",
    "parameter_count",
    "parameter_source",
    "total_size",
    "secret_name",
)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
# a branch, tag or commit as git allows it (git check-ref-format), refs/pr/N included
REVISION = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)[!-~]{1,255}(?<![/.])$")
REVISION_FORBIDDEN = set("~^:?*[\\")


def _revision(value: str | None, field: str) -> str | None:
    """A revision to ask the hub for, or None (the default branch); a 400 when git would
    never accept it as a name (spaces, control or non-ASCII characters, ``..``)."""
    value = (value or "").strip()
    if not value:
        return None
    if not REVISION.match(value) or REVISION_FORBIDDEN & set(value):
        raise ServiceError(
            f"{value!r} is not a branch, tag or commit name: use printable ASCII without "
            "spaces, '..' or any of ~^:?*[\\ (for example main, v1.0 or a commit sha).",
            field=field,
        )
    return value


ARCH_FIELDS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "max_context",
    "vocab_size",
)


def _token(secret_name: str) -> str | None:
    if not secret_name:
        return None
    try:
        token = reveal_secret(secret_name)
    except ServiceError as error:
        raise ServiceError(error.message, field="secret_name") from None
    if not is_bearer_token(token):
        raise ServiceError(
            f"Secret {secret_name!r} cannot be sent as a Hugging Face token: {BEARER_SHAPE}. "
            "Store the token alone in it (or in a secret of kind Hugging Face token).",
            field="secret_name",
        )
    return token


def _architecture(snap: hub.ModelSnapshot) -> Architecture:
    if snap.config:
        return architecture_from_config(snap.config)
    if snap.gguf_facts:
        return Architecture(**snap.gguf_facts)
    return Architecture()


def parameter_count(snap: hub.ModelSnapshot, arch: Architecture) -> tuple[int | None, str]:
    """safetensors metadata, else GGUF metadata, else an estimate from the config."""
    if snap.safetensors_total:
        return snap.safetensors_total, ParameterSource.SAFETENSORS
    if snap.gguf_total:
        return snap.gguf_total, ParameterSource.GGUF
    estimate = estimate_parameters(arch)
    return (estimate, ParameterSource.ESTIMATE) if estimate else (None, "")


def _apply(model: CatalogModel, snap: hub.ModelSnapshot) -> None:
    """Copy the upstream facts of ``snap`` onto ``model`` (not saved)."""
    arch = _architecture(snap)
    model.commit_sha = snap.commit_sha
    model.upstream_commit_sha = snap.commit_sha
    model.last_synced_at = timezone.now()
    model.config = snap.config
    model.architecture = arch.architecture[:100]
    model.model_type = arch.model_type[:60]
    for name in ARCH_FIELDS:
        setattr(model, name, getattr(arch, name))
    model.parameter_count, model.parameter_source = parameter_count(snap, arch)
    model.licence = snap.licence[:100]
    model.gated = snap.gated
    model.private = snap.private
    model.tags = snap.tags
    model.task = snap.task[:60]
    model.library = snap.library[:60]
    model.downloads = snap.downloads
    model.total_size = snap.total_size


def _sync_files(model: CatalogModel, snap: hub.ModelSnapshot) -> dict[str, ModelFile]:
    """Make the model's upstream file rows match ``snap``; files of local variants stay."""
    existing = {f.path: f for f in model.files.all()}
    local = set(
        ModelFile.objects.filter(variants__model=model)
        .exclude(variants__produced_by__source="upstream")
        .values_list("pk", flat=True)
    )
    for path, row in existing.items():
        if snap.file(path) is None and row.pk not in local:
            row.delete()
    rows: dict[str, ModelFile] = {}
    for f in snap.files:
        row = existing.get(f.path) or ModelFile(model=model, path=f.path)
        row.size, row.sha256, row.blob_id, row.lfs = f.size, f.sha256, f.blob_id, f.lfs
        row.save()
        rows[f.path] = row
    return rows


def _sync_variants(
    model: CatalogModel, snap: hub.ModelSnapshot, files: dict[str, ModelFile]
) -> list[str]:
    """Create or update the upstream variants; drop those gone upstream. Returns names."""
    specs = detect_variants(
        snap.files,
        parameters=model.parameter_count,
        config=snap.config,
        dtypes=snap.safetensors_dtypes,
    )
    upstream = {v.name: v for v in model.variants.filter(produced_by__source="upstream")}
    gone = [v for name, v in upstream.items() if name not in {s.name for s in specs}]
    placed = NodeModel.objects.filter(variant__in=gone).select_related("node", "variant")
    if placed:
        where = ", ".join(sorted({f"{p.variant.name} on {p.node.name}" for p in placed}))
        raise ConflictError(
            f"Upstream no longer has variants that nodes hold ({where}); remove them from "
            "those nodes first."
        )
    for variant in gone:
        variant.delete()
    for spec in specs:
        if spec.format == "gguf" and not spec.quantization and snap.gguf_file_type:
            spec.quantization = snap.gguf_file_type if len(specs) == 1 else ""
        variant = upstream.get(spec.name) or Variant(model=model, name=spec.name)
        if variant.pk is not None:
            variant.version += 1
        variant.format = spec.format
        variant.quantization = spec.quantization
        variant.bits_per_weight = spec.bits_per_weight
        variant.size = spec.size
        variant.produced_by = spec.produced_by
        variant.save()
        variant.files.set([files[path] for path in spec.paths])
    return [spec.name for spec in specs]


def _snapshot_model(model: CatalogModel) -> dict[str, Any]:
    return snapshot(model, MODEL_FIELDS)


def import_model(
    ctx: ChangeContext, *, repo_id: str, revision: str | None = None, secret_name: str = ""
) -> CatalogModel:
    """Import ``repo_id`` at ``revision`` (default branch), pinned to its commit sha."""
    repo_id = repo_id.strip().strip("/")
    if not REPO_ID.match(repo_id):
        raise ServiceError(
            f"{repo_id!r} is not a repository id; write it as owner/name.", field="repo_id"
        )
    if CatalogModel.objects.filter(repo_id=repo_id).exists():
        raise ConflictError(f"{repo_id} is in the catalog already.", field="repo_id")
    revision = _revision(revision, "revision")
    snap = hub.model_info(repo_id, revision, token=_token(secret_name))
    with transaction.atomic():
        if CatalogModel.objects.filter(repo_id=repo_id).exists():
            raise ConflictError(f"{repo_id} is in the catalog already.", field="repo_id")
        model = CatalogModel(
            repo_id=repo_id,
            requested_revision=revision or "main",
            secret_name=secret_name,
            imported_by=ctx.user,
        )
        _apply(model, snap)
        model.save()
        names = _sync_variants(model, snap, _sync_files(model, snap))
        changes = diff({}, _snapshot_model(model))
        changes["variants"] = {"before": None, "after": names}
        if snap.ignored_paths:
            changes["ignored_paths"] = {"before": None, "after": snap.ignored_paths}
        record(ctx, "imported", model, changes=changes)
    return model


def _known_hashes(model: CatalogModel) -> dict[str, str]:
    return {f.blob_id: f.sha256 for f in model.files.all() if f.blob_id and f.sha256}


def _file_facts(f: Any) -> dict[str, Any]:
    return {"size": f.size, "sha256": f.sha256}


def upstream_diff(model: CatalogModel, snap: hub.ModelSnapshot) -> dict[str, Any]:
    """What changed upstream since the pin: files added/removed/changed, config keys."""
    ours = {f.path: f for f in model.files.filter(variants__produced_by__source="upstream")}
    ours.update({f.path: f for f in model.files.filter(variants__isnull=True)})
    theirs = {f.path: f for f in snap.files}
    changed = [
        {"path": path, "before": _file_facts(ours[path]), "after": _file_facts(theirs[path])}
        for path in sorted(set(ours) & set(theirs))
        if (ours[path].sha256, ours[path].size) != (theirs[path].sha256, theirs[path].size)
    ]
    config = diff(model.config or {}, snap.config or {})
    facts = diff(
        {"licence": model.licence, "gated": model.gated, "tags": model.tags},
        {"licence": snap.licence, "gated": snap.gated, "tags": snap.tags},
    )
    added = sorted(set(theirs) - set(ours))
    removed = sorted(set(ours) - set(theirs))
    return {
        "repo_id": model.repo_id,
        "revision": model.requested_revision,
        "pinned_commit": model.commit_sha,
        "upstream_commit": snap.commit_sha,
        "up_to_date": snap.commit_sha == model.commit_sha
        and not (added or removed or changed or config),
        "files": {
            "added": [{"path": p, **_file_facts(theirs[p])} for p in added],
            "removed": [{"path": p, **_file_facts(ours[p])} for p in removed],
            "changed": changed,
        },
        "config": config,
        "facts": facts,
        "version": model.version,
    }


def resync(ctx: ChangeContext, model: CatalogModel) -> dict[str, Any]:
    """Compare the pin with the upstream head of the requested revision (changes no pin).

    Records the upstream commit and the time of the check on the model (observed state,
    no history event: nothing an operator decided changed).
    """
    snap = hub.model_info(
        model.repo_id,
        model.requested_revision,
        token=_token(model.secret_name),
        known_sha256=_known_hashes(model),
    )
    CatalogModel.objects.filter(pk=model.pk).update(
        upstream_commit_sha=snap.commit_sha, last_synced_at=timezone.now()
    )
    model.refresh_from_db()
    return upstream_diff(model, snap)


def repin(
    ctx: ChangeContext,
    model: CatalogModel,
    *,
    expected_version: int | None,
    commit: str | None = None,
) -> CatalogModel:
    """Move the pin to ``commit`` (default: the upstream head of the requested revision)."""
    check_version(model.version, expected_version, f"Model {model.repo_id}")
    snap = hub.model_info(
        model.repo_id,
        _revision(commit, "commit") or model.requested_revision,
        token=_token(model.secret_name),
        known_sha256=_known_hashes(model),
    )
    with transaction.atomic():
        locked = CatalogModel.objects.select_for_update().get(pk=model.pk)
        check_version(locked.version, expected_version, f"Model {model.repo_id}")
        changed = upstream_diff(locked, snap)
        before = _snapshot_model(locked)
        _apply(locked, snap)
        locked.version += 1
        locked.save()
        names = _sync_variants(locked, snap, _sync_files(locked, snap))
        changes = diff(before, _snapshot_model(locked))
        for kind in ("added", "removed", "changed"):
            paths = [f["path"] for f in changed["files"][kind]]
            if paths:
                changes[f"files_{kind}"] = {"before": None, "after": paths}
        if changed["config"]:
            changes["config"] = {"before": None, "after": sorted(changed["config"])}
        changes["variants"] = {"before": None, "after": names}
        record(ctx, "repinned", locked, changes=changes)
    return locked


@transaction.atomic
def delete_model(ctx: ChangeContext, model: CatalogModel) -> None:
    """Forget a model with its files and variants; refused while a node holds a variant or a
    deployment revision refers to one."""
    placed = NodeModel.objects.filter(variant__model=model).select_related("node")
    if placed:
        nodes = ", ".join(sorted({p.node.name for p in placed}))
        raise ConflictError(
            f"Variants of {model.repo_id} are on nodes ({nodes}); remove them there first."
        )
    used_by = references.model_used_by(model)  # deployments (they register themselves)
    if used_by:
        raise ConflictError(
            f"Deployments use variants of {model.repo_id} ({', '.join(used_by)}), and their "
            "revisions keep it for rollbacks; delete those deployments first."
        )
    record(ctx, "deleted", model, changes=diff(_snapshot_model(model), {}))
    model.delete()


# --- Licence policy -------------------------------------------------------------------------
def licence_policy() -> Setting | None:
    return Setting.objects.filter(key=ALLOWED_LICENCES_KEY).first()


def get_allowed_licences() -> list[str]:
    """Licences allowed for deployment: the stored policy, else the settings default."""
    setting = licence_policy()
    if setting is not None and isinstance(setting.value, dict) and "licences" in setting.value:
        return list(setting.value["licences"])
    return sorted({str(x).strip().lower() for x in settings.FLEET_DEFAULT_ALLOWED_LICENCES})


def set_allowed_licences(
    ctx: ChangeContext, licences: list[str], expected_version: int | None = None
) -> Setting:
    """Replace the licence policy (admins; the caller checks the role)."""
    cleaned = sorted({str(x).strip().lower() for x in licences if str(x).strip()})
    bad = [x for x in cleaned if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]{0,99}", x)]
    if bad:
        raise ServiceError(
            f"Not licence identifiers: {', '.join(bad)} (use SPDX-style ids such as apache-2.0).",
            field="licences",
        )
    with transaction.atomic():
        setting = Setting.objects.select_for_update().filter(key=ALLOWED_LICENCES_KEY).first()
        check_version(setting.version if setting else 0, expected_version, "The licence policy")
        before = get_allowed_licences()
        if setting is not None and before == cleaned:
            return setting
        if setting is None:
            setting = Setting(key=ALLOWED_LICENCES_KEY, version=0)
        setting.value = {"licences": cleaned}
        setting.version += 1
        setting.updated_at = timezone.now()
        setting.save()
        record(
            ctx,
            "updated",
            setting,
            changes={"licences": {"before": before, "after": cleaned}},
        )
    return setting


def check_licence(subject: Variant | CatalogModel, allowed: list[str] | None = None) -> str | None:
    """Why ``subject`` may not be deployed under the licence policy, or None when it may."""
    model = subject.model if isinstance(subject, Variant) else subject
    allowed = get_allowed_licences() if allowed is None else allowed
    if not model.licence:
        return f"{model.repo_id} names no licence; only licences in the allowed list may deploy"
    if model.licence.lower() not in allowed:
        return f"licence {model.licence} is not in the allowed list"
    return None


def policy_as_dict() -> dict[str, Any]:
    setting = licence_policy()
    return {
        "licences": get_allowed_licences(),
        "is_default": setting is None,
        "version": setting.version if setting is not None else 0,
        "updated_at": setting.updated_at if setting is not None else None,
    }


__all__ = [
    "check_licence",
    "delete_model",
    "fits_on",
    "get_allowed_licences",
    "import_model",
    "repin",
    "resync",
    "set_allowed_licences",
]
