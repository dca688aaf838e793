"""The Django admin, scoped to one organization: the one the admin last opened in the app.

Every admin page runs inside that tenant (RLS applies), and only the organization's admins get in.
"""

from functools import update_wrapper

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login

from accounts.models import Membership, Organization, Role
from csm.tenancy import enter_org, enter_user


class OrgAdminSite(admin.AdminSite):
    site_header = "Vigil data admin"
    site_title = "Vigil admin"
    index_title = "Your organization's data"

    def _admin_membership(self, request) -> Membership | None:
        if not request.user.is_active or not request.user.is_authenticated:
            return None
        if not hasattr(request, "_admin_membership"):
            enter_user(request.user.pk)
            slug = request.session.get("org_slug", "")
            request._admin_membership = (
                Membership.objects.select_related("org")
                .filter(user=request.user, org__slug=slug, role=Role.ADMIN)
                .first()
            )
        return request._admin_membership

    def has_permission(self, request):
        return self._admin_membership(request) is not None

    def admin_view(self, view, cacheable=False):
        def scoped(request, *args, **kwargs):
            membership = self._admin_membership(request)
            if membership is not None:
                enter_org(membership.org)
                request.org = membership.org
            response = view(request, *args, **kwargs)
            # Admin pages evaluate querysets while rendering: render inside the tenant's transaction.
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
            return response

        return super().admin_view(update_wrapper(scoped, view), cacheable)

    def login(self, request, extra_context=None):
        return redirect_to_login(request.get_full_path())

    def each_context(self, request):
        context = super().each_context(request)
        membership = getattr(request, "_admin_membership", None)
        if membership:
            context["site_header"] = f"{membership.org.name} · data admin"
        return context


class OrgScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin for a tenant model: the org is implied, related choices stay in the org."""

    exclude = ("org",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(org=request.org)

    def save_model(self, request, obj, form, change):
        obj.org = request.org
        super().save_model(request, obj, form, change)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if related is get_user_model():
            kwargs["queryset"] = related.objects.filter(memberships__org=request.org)
        elif any(f.name == "org" for f in related._meta.get_fields()) and related is not Organization:
            kwargs["queryset"] = related.objects.filter(org=request.org)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_module_permission(self, request):
        return getattr(request, "org", None) is not None

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    has_add_permission = has_view_permission
    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission
