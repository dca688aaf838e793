from django.contrib import admin

from accounts.models import Account, Activity, Contact, Invoice, Task, Ticket
from csm.admin import OrgScopedAdmin


@admin.register(Account)
class AccountAdmin(OrgScopedAdmin):
    list_display = ("name", "external_id", "tier", "arr", "stage", "csm", "renewal_date")
    list_filter = ("stage", "tier")
    search_fields = ("name", "external_id", "domain")


@admin.register(Contact)
class ContactAdmin(OrgScopedAdmin):
    list_display = ("name", "email", "account", "is_champion", "left_on")
    search_fields = ("name", "email", "external_id")
    raw_id_fields = ("account",)


@admin.register(Task)
class TaskAdmin(OrgScopedAdmin):
    list_display = ("title", "account", "owner_side", "status", "due_date")
    list_filter = ("status", "owner_side")
    search_fields = ("title", "external_id")
    raw_id_fields = ("account",)


@admin.register(Activity)
class ActivityAdmin(OrgScopedAdmin):
    list_display = ("occurred_at", "account", "kind", "actor_side", "summary")
    list_filter = ("kind", "actor_side")
    raw_id_fields = ("account",)


@admin.register(Ticket)
class TicketAdmin(OrgScopedAdmin):
    list_display = ("subject", "account", "status", "priority", "opened_at")
    list_filter = ("status", "priority")
    raw_id_fields = ("account",)


@admin.register(Invoice)
class InvoiceAdmin(OrgScopedAdmin):
    list_display = ("external_id", "account", "amount", "status", "issued_at", "due_date")
    list_filter = ("status",)
    raw_id_fields = ("account",)
