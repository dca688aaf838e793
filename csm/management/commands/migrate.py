"""`migrate` as the owner role, then Row Level Security and the app role's grants."""

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections

from csm import rls
from csm.db_roles import as_owner, ensure_app_role, grant_app_role


class Command(DjangoMigrate):
    def handle(self, *args, **options):
        alias = options["database"]
        with as_owner(alias):
            super().handle(*args, **options)
            with connections[alias].cursor() as cursor:
                ensure_app_role(cursor)
                tables = rls.apply_policies(cursor)
                grant_app_role(cursor)
        if options["verbosity"] >= 1:
            self.stdout.write(f"Row Level Security enforced on {len(tables)} tenant tables.")
