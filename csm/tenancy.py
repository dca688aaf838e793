"""The one way into a tenant.

Web views resolve the organization from the URL, verify membership and set the tenant inside the
request's transaction (ATOMIC_REQUESTS); tasks and commands use `tenant()`. Both go through
`_set_local`, which is the only code that writes the `vigil.*` settings Row Level Security reads.
"""

from contextlib import contextmanager

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.http import Http404

from accounts.models import Membership, Organization, Role


def _set_local(name: str, value) -> None:
    # set_config(..., is_local => true) is SET LOCAL: it ends with the transaction, so a pooled
    # connection never carries a tenant into the next request or task.
    if not connection.in_atomic_block:
        raise RuntimeError("the tenant can only be set inside a transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [name, "" if value is None else str(value)])


def _current(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [name])
        return cursor.fetchone()[0] or ""


@contextmanager
def tenant(org: Organization | int):
    """Enter one organization for the block, inside a (possibly nested) transaction."""
    org_id = org if isinstance(org, int) else org.pk
    with transaction.atomic():
        previous = _current("vigil.org_id")
        _set_local("vigil.org_id", org_id)
        yield
        _set_local("vigil.org_id", previous)


def enter_user(user_id: int) -> None:
    """Let the current transaction see this user's own memberships (and nothing else)."""
    _set_local("vigil.user_id", user_id)


def enter_org(org: Organization | int) -> None:
    _set_local("vigil.org_id", org if isinstance(org, int) else org.pk)


def memberships_for_user(user) -> list[Membership]:
    """The user's organizations, for the switcher; needs an open transaction."""
    enter_user(user.pk)
    return list(Membership.objects.filter(user=user).select_related("org").order_by("org__name"))


def resolve_membership(request, slug: str) -> Membership:
    """Find the organization by slug and the user's membership in it; 404 for both failures."""
    enter_user(request.user.pk)
    membership = Membership.objects.select_related("org").filter(org__slug=slug, user_id=request.user.pk).first()
    if membership is None:
        raise Http404("No such organization")
    enter_org(membership.org)
    return membership


class OrgViewMixin(LoginRequiredMixin):
    """Base of every organization page: /o/<org_slug>/...

    `allowed_roles` lists who may open the page; other members get 403.
    """

    allowed_roles: tuple[str, ...] = tuple(Role.values)

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        membership = resolve_membership(request, kwargs["org_slug"])
        request.membership = membership
        request.org = membership.org
        # Read now, inside the transaction: error pages render after it has ended.
        request.user_orgs = memberships_for_user(request.user)
        request.session["org_slug"] = membership.org.slug
        if membership.role not in self.allowed_roles:
            raise PermissionDenied("Your role cannot open this page.")
        self.org = membership.org
        self.membership = membership
        response = super().dispatch(request, *args, **kwargs)
        # Render while the transaction, and so the tenant, is still in force: a lazy
        # TemplateResponse would otherwise query after ATOMIC_REQUESTS has committed.
        if hasattr(response, "render") and not getattr(response, "is_rendered", True):
            response.render()
        return response


def tenant_context_processor(request):
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    return {
        "org": membership.org,
        "membership": membership,
        "user_orgs": getattr(request, "user_orgs", [membership]),
    }


class OrgAPIMixin:
    """Base of every /api/v1/ view.

    A token names its organization; with a session, `?org=<slug>` or the organization last opened
    in the browser. Membership is verified before any tenant query, the role on every view.
    """

    allowed_roles: tuple[str, ...] = tuple(Role.values)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        from accounts.models import ApiToken

        if isinstance(request.auth, ApiToken):
            slug = request.auth.org.slug
        else:
            slug = request.query_params.get("org") or request.session.get("org_slug") or ""
        membership = resolve_membership(request, slug)
        if membership.role not in self.allowed_roles:
            raise PermissionDenied("Your role cannot use this endpoint.")
        request.membership = membership
        request.org = membership.org
        self.org = membership.org
        self.membership = membership
