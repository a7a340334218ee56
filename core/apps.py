from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: accounts, tokens, secrets, history"

    def ready(self) -> None:
        from core import history, history_live, overview
        from core.targets import register_target_url

        register_target_url("core.job", "jobs-detail")

        overview.register_tiles(30, "jobs", overview.job_tiles)
        # Inverted seam: history sends event_recorded and imports nothing of the live
        # updates; the receiver that pushes each event to the history pages is connected here.
        history.event_recorded.connect(
            history_live.on_event_recorded, dispatch_uid="core.history_live"
        )
