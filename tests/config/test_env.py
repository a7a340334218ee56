"""The settings parsers refuse bad values with a message naming the variable."""

from __future__ import annotations

import os
import stat

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import EnvReader, persistent_secret


def reader(**values: str) -> EnvReader:
    return EnvReader(values)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_boolean_accepts_common_spellings(raw, expected):
    assert reader(FLAG=raw).boolean("FLAG", not expected) is expected


def test_boolean_default_and_refusal():
    assert reader().boolean("FLAG", True) is True
    assert reader(FLAG="  ").boolean("FLAG", False) is False
    with pytest.raises(ImproperlyConfigured, match="FLAG='maybe' is not a boolean"):
        reader(FLAG="maybe").boolean("FLAG", False)


def test_integer_with_bounds():
    assert reader(N="42").integer("N", 1) == 42
    assert reader().integer("N", 7) == 7
    with pytest.raises(ImproperlyConfigured, match="N='4x' is not a whole number"):
        reader(N="4x").integer("N", 1)
    with pytest.raises(ImproperlyConfigured, match="N=0 is below the minimum of 1"):
        reader(N="0").integer("N", 5, minimum=1)
    with pytest.raises(ImproperlyConfigured, match="N=101 is above the maximum of 100"):
        reader(N="101").integer("N", 5, maximum=100)


def test_strings_split_on_commas_and_drop_blanks():
    assert reader(HOSTS="a.example, b.example,,").strings("HOSTS") == ["a.example", "b.example"]
    assert reader().strings("HOSTS", ["localhost"]) == ["localhost"]


def test_choice_names_the_allowed_values():
    assert reader(ENV="production").choice("ENV", "development", ("development", "production"))
    with pytest.raises(
        ImproperlyConfigured, match="ENV='prod' is not one of: development, production"
    ):
        reader(ENV="prod").choice("ENV", "development", ("development", "production"))


def test_required_string():
    with pytest.raises(ImproperlyConfigured, match="SECRET must be set"):
        reader().string("SECRET", required=True)


def test_secret_from_file(tmp_path):
    path = tmp_path / "key"
    path.write_text("s3cret\n")
    assert reader(KEY_FILE=str(path)).secret("KEY") == "s3cret"
    assert reader(KEY="direct").secret("KEY") == "direct"


def test_secret_refuses_both_missing_and_empty_files(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="Set either KEY or KEY_FILE, not both"):
        reader(KEY="a", KEY_FILE="/nonexistent").secret("KEY")
    with pytest.raises(ImproperlyConfigured, match="KEY_FILE='/nonexistent/key' cannot be read"):
        reader(KEY_FILE="/nonexistent/key").secret("KEY")
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ImproperlyConfigured, match="is empty"):
        reader(KEY_FILE=str(empty)).secret("KEY")
    with pytest.raises(ImproperlyConfigured, match=r"KEY \(or KEY_FILE\) must be set"):
        reader().secret("KEY", required=True)


def test_secret_list_accepts_commas_and_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text("k1\nk2, k3\n")
    assert reader(KEYS_FILE=str(path)).secret_list("KEYS") == ["k1", "k2", "k3"]


def test_database_urls():
    pg = reader(DATABASE_URL="postgres://u:p@db:5432/fleet").database("DATABASE_URL", "sqlite:///x")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["HOST"], pg["NAME"], pg["USER"]) == ("db", "fleet", "u")
    sqlite = reader().database("DATABASE_URL", "sqlite:////tmp/fleet.sqlite3")
    assert sqlite["ENGINE"] == "django.db.backends.sqlite3"
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL must point at PostgreSQL"):
        reader(DATABASE_URL="mysql://u@db/fleet").database("DATABASE_URL", "sqlite:///x")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL is not a valid database URL"):
        reader(DATABASE_URL="nonsense://").database("DATABASE_URL", "sqlite:///x")


def test_url_scheme_check():
    assert reader(REDIS_URL="redis://h:6379/0").url("REDIS_URL", schemes=("redis",))
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must start with one of: redis://"):
        reader(REDIS_URL="http://h").url("REDIS_URL", schemes=("redis",))


def test_persistent_secret_is_generated_once_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "secret_key"
    first = persistent_secret(path)
    assert len(first) >= 50
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert persistent_secret(path) == first
