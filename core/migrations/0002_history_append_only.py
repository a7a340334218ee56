"""Database-level guard: history events can be inserted, never updated or deleted."""

from django.db import migrations

POSTGRES_FORWARD = """
CREATE OR REPLACE FUNCTION core_historyevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'history events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER core_historyevent_append_only
    BEFORE UPDATE OR DELETE ON core_historyevent
    FOR EACH ROW EXECUTE FUNCTION core_historyevent_append_only();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS core_historyevent_append_only ON core_historyevent;
DROP FUNCTION IF EXISTS core_historyevent_append_only();
"""
SQLITE_FORWARD = [
    "CREATE TRIGGER core_historyevent_no_update BEFORE UPDATE ON core_historyevent "
    "BEGIN SELECT RAISE(ABORT, 'history events are append-only (UPDATE refused)'); END;",
    "CREATE TRIGGER core_historyevent_no_delete BEFORE DELETE ON core_historyevent "
    "BEGIN SELECT RAISE(ABORT, 'history events are append-only (DELETE refused)'); END;",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS core_historyevent_no_update;",
    "DROP TRIGGER IF EXISTS core_historyevent_no_delete;",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunPython(forward, reverse)]
