from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import import_views, revenue_views, settings_views
from accounts import views as account_views
from accounts.sign_in import SignInView
from health import settings_views as health_settings_views
from health import views as health_views
from integrations import intake_views
from integrations import views as integration_views
from signals import views as signal_views

urlpatterns = [
    path("", account_views.home, name="home"),
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("switch/", account_views.switch_org, name="switch-org"),
    path("o/<slug:org_slug>/invitation/<str:token>/", account_views.invitation, name="invitation"),
    path("o/<slug:org_slug>/", signal_views.MorningView.as_view(), name="morning"),
    path(
        "o/<slug:org_slug>/triage/<int:account_id>/<str:action>/",
        signal_views.TriageActionView.as_view(),
        name="triage-action",
    ),
    path("o/<slug:org_slug>/accounts/", account_views.AccountListView.as_view(), name="account-list"),
    path(
        "o/<slug:org_slug>/accounts/<int:account_id>/", account_views.AccountDetailView.as_view(), name="account-detail"
    ),
    path("o/<slug:org_slug>/tasks/<int:task_id>/", account_views.TaskUpdateView.as_view(), name="task-update"),
    path("o/<slug:org_slug>/portfolio/", health_views.PortfolioView.as_view(), name="portfolio"),
    path("o/<slug:org_slug>/revenue/", revenue_views.RevenueView.as_view(), name="revenue"),
    path("o/<slug:org_slug>/integrations/", integration_views.IntegrationsView.as_view(), name="integrations"),
    path(
        "o/<slug:org_slug>/integrations/<str:provider>/connect/",
        integration_views.ConnectView.as_view(),
        name="integration-connect",
    ),
    path(
        "o/<slug:org_slug>/integrations/<int:connection_id>/progress/",
        integration_views.SyncProgressView.as_view(),
        name="integration-progress",
    ),
    path(
        "o/<slug:org_slug>/integrations/<int:connection_id>/unmatched/",
        integration_views.UnmatchedView.as_view(),
        name="integration-unmatched",
    ),
    path(
        "o/<slug:org_slug>/integrations/<int:connection_id>/<str:action>/",
        integration_views.ConnectionActionView.as_view(),
        name="integration-action",
    ),
    path("o/<slug:org_slug>/settings/", settings_views.SettingsView.as_view(), name="settings"),
    path("o/<slug:org_slug>/settings/import/", import_views.CsvImportView.as_view(), name="csv-import"),
    path(
        "o/<slug:org_slug>/settings/health/", health_settings_views.HealthSettingsView.as_view(), name="health-settings"
    ),
    path("api/v1/", include("csm.api_urls")),
    path("admin/", admin.site.urls),
    path("intake/<slug:org_slug>/v1/<str:call>", intake_views.IntakeView.as_view(), name="usage-intake"),
    path("o/<slug:org_slug>/integrations/salesforce/", include("integrations.salesforce_oauth")),
]
