from django.urls import path

from core.views import auth, health, history, jobs, pages, settings

urlpatterns = [
    path("", pages.overview, name="overview"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("jobs/", pages.jobs, name="jobs"),
    path("jobs/<int:pk>/", jobs.job_detail, name="jobs-detail"),
    path("jobs/<int:pk>/action/", jobs.job_action, name="jobs-action"),
    path("history/", history.history_list, name="history"),
    path("history/<int:pk>/", history.history_detail, name="history-detail"),
    path("settings/", settings.settings_index, name="settings"),
    path("settings/users/", settings.settings_users, name="settings-users"),
    path("settings/users/<int:pk>/", settings.settings_user_edit, name="settings-user-edit"),
    path("settings/tokens/", settings.settings_tokens, name="settings-tokens"),
    path(
        "settings/tokens/<int:pk>/revoke/",
        settings.settings_token_revoke,
        name="settings-token-revoke",
    ),
    path("settings/secrets/", settings.settings_secrets, name="settings-secrets"),
    path("settings/secrets/<int:pk>/", settings.settings_secret_edit, name="settings-secret-edit"),
    path(
        "settings/secrets/<int:pk>/delete/",
        settings.settings_secret_delete,
        name="settings-secret-delete",
    ),
    path("settings/password/", settings.settings_password, name="settings-password"),
]
