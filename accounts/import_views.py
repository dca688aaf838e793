"""The CSV import page (admins only): pick a kind, upload a file, see the summary or the row errors."""

from django import forms
from django.views.generic import TemplateView

from accounts.imports import FORMATS, KINDS, CsvImportError, csv_import
from accounts.models import Role
from csm.tenancy import OrgViewMixin

# The page lists fewer errors than the command: past a couple of hundred the pattern is clear.
MAX_ERRORS_ON_PAGE = 200


class CsvImportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(kind, kind.capitalize()) for kind in KINDS])
    file = forms.FileField(label="CSV file")


class CsvImportView(OrgViewMixin, TemplateView):
    template_name = "accounts/import.html"
    allowed_roles = (Role.ADMIN,)

    def get_context_data(self, **kwargs):
        formats = [(kind, [column.name for column in FORMATS[kind]]) for kind in KINDS]
        kwargs.setdefault("form", CsvImportForm())
        return super().get_context_data(formats=formats, **kwargs)

    def post(self, request, *args, **kwargs):
        form = CsvImportForm(request.POST, request.FILES)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        kind = form.cleaned_data["kind"]
        upload = form.cleaned_data["file"]
        try:
            # csv_import rolls its own savepoint back on rejection, so nothing of the file is written.
            result = csv_import(org=self.org, kind=kind, file=upload)
        except CsvImportError as error:
            context = self.get_context_data(
                form=form,
                filename=upload.name,
                rejected=error,
                errors=error.errors[:MAX_ERRORS_ON_PAGE],
                unlisted=error.count - min(len(error.errors), MAX_ERRORS_ON_PAGE),
            )
            return self.render_to_response(context, status=400)
        return self.render_to_response(
            self.get_context_data(form=CsvImportForm(initial={"kind": kind}), filename=upload.name, result=result)
        )
