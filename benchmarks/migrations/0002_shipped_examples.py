"""The shipped example profile and test suite (docs/benchmarks.md); edit or delete freely."""

from django.db import migrations

SWEEP = {
    "mode": "concurrency",
    "levels": [1, 2, 4, 8],
    "arrivals": "constant",
    "requests_per_level": 32,
    "duration_s": None,
    "warmup_requests": 2,
    "prompt_tokens": 128,
    "output_tokens": 64,
    "prompt_set": "",
    "stream": True,
    "api": "chat",
    "temperature": 0.0,
    "timeout_s": 120,
}
CHAT = {**SWEEP, "levels": [1, 4], "prompt_set": "short-chat", "requests_per_level": 16}


def _contains(value):
    return {"type": "contains", "ignore_case": True, "value": value}


def _user(text):
    return [{"role": "user", "content": text}]


CASES = [
    {
        "name": "capital-of-france",
        "messages": _user("What is the capital of France? Answer with one word."),
        "max_tokens": 16,
        "temperature": 0.0,
        "check": _contains("Paris"),
    },
    {
        "name": "addition",
        "messages": _user("What is 12 + 30? Answer with the number only."),
        "max_tokens": 8,
        "temperature": 0.0,
        "check": {"type": "regex", "ignore_case": False, "pattern": r"\b42\b"},
    },
    {
        "name": "yes-or-no",
        "messages": _user("Is the sun a star? Answer yes or no, nothing else."),
        "max_tokens": 4,
        "temperature": 0.0,
        "check": {"type": "one_of", "ignore_case": True, "choices": ["yes", "no"]},
    },
    {
        "name": "json-person",
        "messages": _user(
            "Return only a JSON object with keys name (a string) and age (an integer) for "
            "a person called Ada who is 36."
        ),
        "max_tokens": 48,
        "temperature": 0.0,
        "check": {
            "type": "json_schema",
            "ignore_case": False,
            "schema": {
                "type": "object",
                "required": ["name", "age"],
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            },
        },
    },
    {
        "name": "answers-within-30-s",
        "messages": _user("Say hello."),
        "max_tokens": 16,
        "temperature": 0.0,
        "check": {"type": "max_latency", "ignore_case": False, "value_ms": 30000.0},
    },
]


def add(apps, schema_editor):
    profile = apps.get_model("benchmarks", "BenchmarkProfile")
    suite = apps.get_model("benchmarks", "TestSuite")
    profile.objects.get_or_create(
        name="concurrency-sweep",
        defaults={
            "spec": SWEEP,
            "description": "Concurrency 1, 2, 4, 8; 32 streamed requests per level, 128→64 tokens.",
        },
    )
    profile.objects.get_or_create(
        name="short-chat",
        defaults={
            "spec": CHAT,
            "description": "The shipped short-chat prompt set at concurrency 1 and 4.",
        },
    )
    suite.objects.get_or_create(
        name="example-basics",
        defaults={
            "cases": CASES,
            "description": "Facts, arithmetic, a choice, JSON output and latency: a starting point.",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("benchmarks", "BenchmarkProfile").objects.filter(
        name__in=["concurrency-sweep", "short-chat"]
    ).delete()
    apps.get_model("benchmarks", "TestSuite").objects.filter(name="example-basics").delete()


class Migration(migrations.Migration):
    dependencies = [("benchmarks", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
