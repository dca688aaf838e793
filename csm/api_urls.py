from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import api as accounts_api
from signals import api as signals_api

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("triage/", signals_api.TriageView.as_view(), name="api-triage"),
    path("accounts/", accounts_api.AccountListView.as_view(), name="api-account-list"),
    path("accounts/<int:pk>/", accounts_api.AccountDetailView.as_view(), name="api-account-detail"),
    path("signals/<int:pk>/", signals_api.SignalDetailView.as_view(), name="api-signal-detail"),
    path("signals/<int:pk>/done/", signals_api.SignalDoneView.as_view(), name="api-signal-done"),
    path("signals/<int:pk>/snooze/", signals_api.SignalSnoozeView.as_view(), name="api-signal-snooze"),
    path("runs/", signals_api.RunListView.as_view(), name="api-runs"),
]
