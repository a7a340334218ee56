"""Job kinds of the catalog, found by ``core.job_services`` (autodiscovered by module name)."""

from core.job_services import register_kind
from models_catalog.downloads import CacheVariantKind, DownloadKind
from models_catalog.quantize.kinds import QuantizeKind

register_kind(CacheVariantKind())
register_kind(DownloadKind())
register_kind(QuantizeKind())
