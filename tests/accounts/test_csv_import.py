"""CSV import: every kind loads, any bad row rejects the whole file with its row number, re-import is a no-op."""

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.imports import CsvImportError, csv_import
from accounts.models import Account, Activity, ArrChange, Contact, Invoice, Task, Ticket, UsageDay
from csm.tenancy import tenant
from tests.factories import make_account, make_member, make_org

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "csv"
ROWS_IN_SAMPLE = {"contacts": 2, "tasks": 3, "activities": 2, "usage": 3, "tickets": 2, "invoices": 2}

ACCOUNTS_HEADER = (
    "external_id,name,domain,tier,arr,currency,plan,seat_limit,stage,csm_email,am_email,"
    "go_live_date,renewal_date,contract_start,created_at"
)


@pytest.fixture
def org():
    return make_org(timezone_name="America/New_York")


@pytest.fixture
def write(tmp_path):
    def write(text: str, *, name: str = "file.csv", bom: bool = False):
        path = tmp_path / name
        path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
        return path

    return write


def rejected(org, kind, path) -> list[str]:
    with pytest.raises(CsvImportError) as caught:
        csv_import(org=org, kind=kind, file=path)
    return [str(error) for error in caught.value.errors]


def count(org, model) -> int:
    with tenant(org):
        return model.objects.count()


# --- each kind imports --------------------------------------------------------------------------


def test_accounts_import_with_owners_defaults_and_arr_history(org, write):
    make_member(org, role="csm", email="casey@vendor.example")
    path = write(
        ACCOUNTS_HEADER + "\n"
        "A-1,Acme Corp,acme.example, Enterprise ,120000.50,,Scale,50,Steady,Casey@Vendor.example,,"
        "2025-06-01,2026-09-30,2025-05-01,2025-05-01T09:30:00\n"
        'A-2,"Globex, Inc.",globex.example,smb,9000,EUR,,,onboarding,,,2026-03-01,,,\n'
    )

    result = csv_import(org=org, kind="accounts", file=path)

    assert (result.created, result.updated, result.unchanged) == (2, 0, 0)
    with tenant(org):
        acme = Account.objects.get(external_id="A-1")
        globex = Account.objects.get(external_id="A-2")
        history = list(ArrChange.objects.order_by("arr").values_list("account__external_id", "arr", "effective_date"))
    assert acme.tier == "enterprise"
    assert acme.arr == Decimal("120000.50")
    assert acme.currency == "USD"
    assert acme.seat_limit == 50
    assert acme.stage == "steady"
    assert acme.csm.email == "casey@vendor.example"
    assert acme.am is None
    assert acme.created_at == datetime(2025, 5, 1, 13, 30, tzinfo=UTC)  # 09:30 in New York (EDT)
    assert globex.name == "Globex, Inc."
    assert globex.currency == "EUR"
    assert globex.seat_limit is None
    assert globex.renewal_date is None
    assert globex.created_at is not None
    today = datetime.now(org.tz).date()
    assert history == [("A-2", Decimal("9000.00"), today), ("A-1", Decimal("120000.50"), today)]


def test_contacts_import(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,name,email,phone,title,is_champion\n"
        "C-1,A-1,Jane Doe,Jane@Acme.example,+1 555 0100,VP Operations,Yes\n"
        "C-2,A-1,John Roe,,,,\n"
    )

    result = csv_import(org=org, kind="contacts", file=path)

    assert result.created == 2
    with tenant(org):
        jane = Contact.objects.get(external_id="C-1")
        john = Contact.objects.get(external_id="C-2")
    assert (jane.email, jane.title, jane.is_champion) == ("jane@acme.example", "VP Operations", True)
    assert (john.email, john.phone, john.is_champion) == ("", "", False)


def test_tasks_import_normalizes_status_and_keeps_unknown_block_time_empty(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,title,owner_side,status,due_date,created_at,status_changed_at,"
        "completed_at,verified_by_client\n"
        "T-1,A-1,Connect SSO,Client,In Progress,2026-02-01,2026-01-10,,,no\n"
        "T-2,A-1,Send data export,client,blocked,2026-02-03,2026-01-10T08:00:00,,,\n"
        "T-3,A-1,Kick-off,vendor,DONE,2026-01-15,2026-01-05,2026-01-15T10:00:00,2026-01-15T10:00:00,1\n"
        "T-4,A-1,Train admins,vendor,in-progress,2026-02-10,,,,\n"
    )

    result = csv_import(org=org, kind="tasks", file=path)

    assert result.created == 4
    with tenant(org):
        tasks = {task.external_id: task for task in Task.objects.all()}
    assert tasks["T-1"].status == "in_progress"
    assert tasks["T-1"].owner_side == "client"
    assert tasks["T-1"].created_at == datetime(2026, 1, 10, 5, 0, tzinfo=UTC)  # local midnight in New York
    assert tasks["T-2"].status == "blocked"
    assert tasks["T-2"].status_changed_at is None
    assert tasks["T-3"].completed_at == datetime(2026, 1, 15, 15, 0, tzinfo=UTC)
    assert tasks["T-3"].verified_by_client is True
    assert tasks["T-4"].status == "in_progress"
    assert tasks["T-4"].created_at is not None


def test_activities_import(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,occurred_at,kind,direction,actor_side,summary\n"
        'ACT-1,A-1,2026-01-20T15:00:00Z,Meeting,outbound,vendor,"QBR: renewal, seats"\n'
        "ACT-2,A-1,2026-01-21T09:00:00,email,,,\n"
    )

    result = csv_import(org=org, kind="activities", file=path)

    assert result.created == 2
    with tenant(org):
        qbr = Activity.objects.get(external_id="ACT-1")
        mail = Activity.objects.get(external_id="ACT-2")
    assert (qbr.kind, qbr.direction, qbr.actor_side) == ("meeting", "outbound", "vendor")
    assert qbr.summary == "QBR: renewal, seats"
    assert qbr.occurred_at == datetime(2026, 1, 20, 15, 0, tzinfo=UTC)
    assert (mail.direction, mail.actor_side, mail.summary) == ("", "", "")


def test_usage_import(org, write):
    account = make_account(org, external_id="A-1")
    path = write(
        "account_external_id,date,active_users,seats_used,events\nA-1,2026-01-01,12,15,340\nA-1,2026-01-02,,,\n"
    )

    result = csv_import(org=org, kind="usage", file=path)

    assert result.created == 2
    with tenant(org):
        days = list(
            UsageDay.objects.filter(account=account).order_by("date").values_list("date", "seats_used", "events")
        )
    assert days == [(date(2026, 1, 1), 15, 340), (date(2026, 1, 2), 0, 0)]


def test_tickets_import_maps_good_and_bad_csat(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,opened_at,status,priority,solved_at,csat,subject\n"
        "TK-1,A-1,2026-01-05T10:00:00,solved,Urgent,2026-01-06T10:00:00,good,SSO broken\n"
        "TK-2,A-1,2026-01-07,open,,,bad,\n"
        "TK-3,A-1,2026-01-08,closed,low,,4.5,Invoice copy\n"
        "TK-4,A-1,2026-01-09,new,high,,,\n"
    )

    result = csv_import(org=org, kind="tickets", file=path)

    assert result.created == 4
    with tenant(org):
        tickets = {t.external_id: t for t in Ticket.objects.all()}
    assert (tickets["TK-1"].priority, tickets["TK-1"].csat) == ("urgent", Decimal("5"))
    assert (tickets["TK-2"].priority, tickets["TK-2"].csat) == ("normal", Decimal("1"))
    assert tickets["TK-3"].csat == Decimal("4.5")
    assert tickets["TK-4"].csat is None


def test_invoices_import(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,issued_at,amount,currency,status,due_date,paid_at\n"
        "INV-1,A-1,2026-01-01,1250.50,,Past Due,2026-01-31,\n"
        "INV-2,A-1,2026-02-01,1250.50,eur,paid,2026-03-03,2026-02-10T12:00:00+01:00\n"
    )

    result = csv_import(org=org, kind="invoices", file=path)

    assert result.created == 2
    with tenant(org):
        first = Invoice.objects.get(external_id="INV-1")
        second = Invoice.objects.get(external_id="INV-2")
    assert (first.status, first.currency, first.amount) == ("past_due", "USD", Decimal("1250.50"))
    assert second.currency == "EUR"
    assert second.paid_at == datetime(2026, 2, 10, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", list(ROWS_IN_SAMPLE))
def test_every_kind_imports_its_sample_file_and_reimporting_it_changes_nothing(org, kind):
    make_member(org, role="csm", email="csm@vendor.example")
    make_member(org, role="am", email="am@vendor.example")
    accounts = csv_import(org=org, kind="accounts", file=SAMPLES / "accounts.csv")
    assert (accounts.created, accounts.updated, accounts.unchanged) == (3, 0, 0)

    first = csv_import(org=org, kind=kind, file=SAMPLES / f"{kind}.csv")
    again = csv_import(org=org, kind=kind, file=SAMPLES / f"{kind}.csv")

    rows = ROWS_IN_SAMPLE[kind]
    assert (first.created, first.updated, first.unchanged) == (rows, 0, 0)
    assert (again.created, again.updated, again.unchanged) == (0, 0, rows)


# --- file format --------------------------------------------------------------------------------


def test_byte_order_mark_and_quoted_commas_are_handled(org, write):
    path = write(
        ACCOUNTS_HEADER + '\nA-1,"Smith, Jones & Co",sj.example,,1000,,"Plan ""Pro"", yearly",,,,,2026-01-01,,,\n',
        bom=True,
    )

    csv_import(org=org, kind="accounts", file=path)

    with tenant(org):
        account = Account.objects.get(external_id="A-1")
    assert account.name == "Smith, Jones & Co"
    assert account.plan == 'Plan "Pro", yearly'


def test_timestamps_without_offset_are_local_to_the_organization(write):
    tokyo = make_org(timezone_name="Asia/Tokyo")
    make_account(tokyo, external_id="A-1")
    path = write(
        "external_id,account_external_id,occurred_at,kind,direction,actor_side,summary\n"
        "ACT-1,A-1,2026-01-20T09:00:00,call,,client,\n"
        "ACT-2,A-1,2026-01-20 09:00,call,,client,\n"
        "ACT-3,A-1,2026-01-20T09:00:00-05:00,call,,client,\n"
        "ACT-4,A-1,2026-01-20,call,,client,\n"
    )

    csv_import(org=tokyo, kind="activities", file=path)

    with tenant(tokyo):
        times = dict(Activity.objects.values_list("external_id", "occurred_at"))
    assert times["ACT-1"] == datetime(2026, 1, 20, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo (UTC+9)
    assert times["ACT-2"] == datetime(2026, 1, 20, 0, 0, tzinfo=UTC)
    assert times["ACT-3"] == datetime(2026, 1, 20, 14, 0, tzinfo=UTC)  # its own offset wins
    assert times["ACT-4"] == datetime(2026, 1, 19, 15, 0, tzinfo=UTC)  # local midnight


# --- re-import ----------------------------------------------------------------------------------


def test_reimporting_the_same_files_changes_nothing(org, write):
    make_member(org, role="csm", email="casey@vendor.example")
    accounts = write(
        ACCOUNTS_HEADER + "\nA-1,Acme,acme.example,enterprise,1000,,,,churned,casey@vendor.example,,2025-01-01,,,\n"
        "A-2,Globex,,,,,,,,,,2025-02-01,,,\n",
        name="accounts.csv",
    )
    tasks = write(
        "external_id,account_external_id,title,owner_side,status,due_date,created_at,status_changed_at,"
        "completed_at,verified_by_client\nT-1,A-1,Connect SSO,client,blocked,2026-02-01,,,,\n",
        name="tasks.csv",
    )
    usage = write("account_external_id,date,active_users,seats_used,events\nA-1,2026-01-01,1,2,3\n", name="usage.csv")
    csv_import(org=org, kind="accounts", file=accounts)
    csv_import(org=org, kind="tasks", file=tasks)
    csv_import(org=org, kind="usage", file=usage)
    with tenant(org):
        before = list(Account.objects.order_by("pk").values("updated_at", "created_at", "churned_on"))
        task_created = Task.objects.get().created_at

    again = [
        csv_import(org=org, kind=kind, file=path)
        for kind, path in [("accounts", accounts), ("tasks", tasks), ("usage", usage)]
    ]

    assert [(r.created, r.updated, r.unchanged) for r in again] == [(0, 0, 2), (0, 0, 1), (0, 0, 1)]
    with tenant(org):
        assert list(Account.objects.order_by("pk").values("updated_at", "created_at", "churned_on")) == before
        assert Task.objects.get().created_at == task_created
    assert count(org, ArrChange) == 2


def test_a_changed_row_is_updated_and_a_new_arr_is_recorded(org, write):
    first = write(
        ACCOUNTS_HEADER + "\nA-1,Acme,,,1000,,,,steady,,,2025-01-01,,,\nA-2,Globex,,,500,,,,,,,2025-01-01,,,\n"
    )
    csv_import(org=org, kind="accounts", file=first)
    with tenant(org):
        ArrChange.objects.update(effective_date=date(2025, 12, 1))  # as if imported on an earlier day
    second = write(
        ACCOUNTS_HEADER + "\nA-1,Acme,,,1500,,,,churned,,,2025-01-01,,,\nA-2,Globex,,,500,,,,,,,2025-01-01,,,\n",
        name="second.csv",
    )

    result = csv_import(org=org, kind="accounts", file=second)

    assert (result.created, result.updated, result.unchanged) == (0, 1, 1)
    today = datetime.now(org.tz).date()
    with tenant(org):
        acme = Account.objects.get(external_id="A-1")
        history = list(ArrChange.objects.filter(account=acme).order_by("effective_date").values_list("arr", flat=True))
    assert acme.stage == "churned"
    assert acme.churned_on == today
    assert history == [Decimal("1000.00"), Decimal("1500.00")]


# --- rejected files -----------------------------------------------------------------------------


def test_a_wrong_header_rejects_the_file(org, write):
    path = write("external_id,account,date\nX,Y,Z\n")

    errors = rejected(org, "usage", path)

    expected = "(expected: account_external_id, date, active_users, seats_used, events)"
    assert errors == [
        f"row 1, column external_id: is not a column of usage files {expected}",
        f"row 1, column account: is not a column of usage files {expected}",
        f"row 1, column account_external_id: is missing from the header {expected}",
        f"row 1, column active_users: is missing from the header {expected}",
        f"row 1, column seats_used: is missing from the header {expected}",
        f"row 1, column events: is missing from the header {expected}",
    ]
    assert count(org, UsageDay) == 0


@pytest.mark.parametrize("separator, label", [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_saved_with_another_separator_says_so_in_one_line(org, write, separator, label):
    columns = ["account_external_id", "date", "active_users", "seats_used", "events"]
    path = write(separator.join(columns) + "\n" + separator.join(["A-1", "2026-11-01", "3", "4", "5"]) + "\n")

    errors = rejected(org, "usage", path)

    assert errors == [
        f"row 1: the columns are separated by {label}, not commas: save the file as CSV with commas (CSV UTF-8); "
        f"its first row must be: {', '.join(columns)}"
    ]
    assert count(org, UsageDay) == 0


def test_every_bad_row_is_listed_and_nothing_is_written(org, write):
    make_member(org, role="csm", email="casey@vendor.example")
    make_account(org, external_id="A-1")
    path = write(
        "external_id,account_external_id,title,owner_side,status,due_date,created_at,status_changed_at,"
        "completed_at,verified_by_client\n"
        "T-1,A-1,Good row,client,todo,2026-02-01,,,,\n"
        "T-2,A-1,Bad date,client,todo,2026-13-01,,,,\n"
        "T-3,A-9,Unknown account,client,todo,2026-02-01,,,,\n"
        "T-4,A-1,Bad status,client,stuck,2026-02-01,,,,\n"
        "T-1,A-1,Repeated id,client,todo,2026-02-01,,,,\n"
        ",A-1,,client,todo,,,,,\n"
        "T-7,A-1,Bad time,client,todo,2026-02-01,yesterday,,,maybe\n"
    )

    errors = rejected(org, "tasks", path)

    assert errors == [
        'row 3, column due_date: "2026-13-01" is not a date (expected YYYY-MM-DD)',
        'row 4, column account_external_id: "A-9" is not an account of this organization (import accounts first)',
        'row 5, column status: "stuck" is not one of: todo, in_progress, blocked, done',
        'row 6, column external_id: "T-1" repeats row 2 (each external_id once per file)',
        "row 7, column external_id: missing value (required)",
        "row 7, column title: missing value (required)",
        'row 8, column created_at: "yesterday" is not a date or time '
        "(expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], optionally with +HH:MM)",
        'row 8, column verified_by_client: "maybe" is not a yes/no value (expected true/false, yes/no or 1/0)',
    ]
    assert count(org, Task) == 0


def test_bad_numbers_and_non_member_owners_are_rejected(org, write):
    make_member(org, role="csm", email="casey@vendor.example")
    outsider_org = make_org()
    make_member(outsider_org, role="csm", email="mallory@elsewhere.example")
    path = write(
        ACCOUNTS_HEADER + "\nA-1,Acme,,,12k,,,,,casey@vendor.example,,2025-01-01,,,\n"
        "A-2,Globex,,,100,,,-3,,mallory@elsewhere.example,,2025-01-01,,,\n"
        "A-3,Initech,,,100,,,10,,,nobody@vendor.example,2025-01-01,,,\n"
    )

    errors = rejected(org, "accounts", path)

    assert errors == [
        'row 2, column arr: "12k" is not a number (expected digits with an optional decimal point, e.g. 1250.50)',
        'row 3, column seat_limit: "-3" is not a whole number of 0 or more',
        'row 3, column csm_email: "mallory@elsewhere.example" is not a member of this organization',
        'row 4, column am_email: "nobody@vendor.example" is not a member of this organization',
    ]
    assert count(org, Account) == 0
    assert count(org, ArrChange) == 0


def test_bad_satisfaction_scores_and_currencies_are_rejected(org, write):
    make_account(org, external_id="A-1")
    tickets = write(
        "external_id,account_external_id,opened_at,status,priority,solved_at,csat,subject\n"
        "TK-1,A-1,2026-01-05,solved,,,great,\n",
        name="tickets.csv",
    )
    invoices = write(
        "external_id,account_external_id,issued_at,amount,currency,status,due_date,paid_at\n"
        "INV-1,A-1,2026-01-01,100,dollars,paid,,\n",
        name="invoices.csv",
    )

    assert rejected(org, "tickets", tickets) == [
        'row 2, column csat: "great" is not a satisfaction score (expected a number, good or bad)'
    ]
    assert rejected(org, "invoices", invoices) == [
        'row 2, column currency: "dollars" is not a currency code (expected 3 letters, e.g. USD)'
    ]
    assert count(org, Ticket) == 0 and count(org, Invoice) == 0


def test_usage_rejects_a_repeated_account_and_date(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "account_external_id,date,active_users,seats_used,events\n"
        "A-1,2026-01-01,1,1,1\nA-1,2026-01-02,1,1,1\nA-1,2026-01-01,2,2,2\nA-1,2026-01-03,one,1,1\n"
    )

    errors = rejected(org, "usage", path)

    assert errors == [
        'row 4, column account_external_id, date: "A-1, 2026-01-01" repeats row 2'
        " (each account and date once per file)",
        'row 5, column active_users: "one" is not a whole number of 0 or more',
    ]
    assert count(org, UsageDay) == 0


def test_an_account_of_another_organization_is_unknown(org, write):
    other = make_org()
    make_account(other, external_id="B-1")
    path = write("account_external_id,date,active_users,seats_used,events\nB-1,2026-01-01,1,1,1\n")

    errors = rejected(org, "usage", path)

    assert errors == [
        'row 2, column account_external_id: "B-1" is not an account of this organization (import accounts first)'
    ]


def test_a_bad_row_late_in_a_large_file_rejects_all_of_it(org, write, monkeypatch):
    # Small chunks so the bad row lands in a later chunk than the good rows already sent to COPY.
    monkeypatch.setattr("accounts.imports.CHUNK_ROWS", 3)
    make_account(org, external_id="A-1")
    lines = [f"A-1,2026-01-{day:02d},1,1,1" for day in range(1, 11)] + ["A-1,2026-01-32,1,1,1"]
    path = write("account_external_id,date,active_users,seats_used,events\n" + "\n".join(lines) + "\n")

    errors = rejected(org, "usage", path)

    assert errors == ['row 12, column date: "2026-01-32" is not a date (expected YYYY-MM-DD)']
    assert count(org, UsageDay) == 0


def test_a_row_with_too_many_values_is_reported(org, write):
    make_account(org, external_id="A-1")
    path = write(
        "account_external_id,date,active_users,seats_used,events\nA-1,2026-01-01,1,1,1\nA-1,2026-01-02,1,1,1,9\n"
    )

    errors = rejected(org, "usage", path)

    assert errors[0].startswith("row 3: has 6 values but the header has 5 columns")


# --- the command --------------------------------------------------------------------------------


def test_command_imports_and_reports_counts(org, write, capsys):
    make_account(org, external_id="A-1")
    path = write("account_external_id,date,active_users,seats_used,events\nA-1,2026-01-01,1,1,1\n")

    call_command("import_csv", "--org", org.slug, "usage", str(path))

    assert "Imported 1 usage rows: 1 created, 0 updated, 0 unchanged." in capsys.readouterr().out
    assert count(org, UsageDay) == 1


def test_command_prints_each_error_and_fails(org, write, capsys):
    make_account(org, external_id="A-1")
    path = write(
        "account_external_id,date,active_users,seats_used,events\nA-1,01/02/2026,1,1,1\nA-2,2026-01-02,1,1,1\n"
    )

    with pytest.raises(CommandError, match="2 errors; nothing was imported"):
        call_command("import_csv", "--org", org.slug, "usage", str(path))

    assert capsys.readouterr().err.splitlines() == [
        'row 2, column date: "01/02/2026" is not a date (expected YYYY-MM-DD)',
        'row 3, column account_external_id: "A-2" is not an account of this organization (import accounts first)',
    ]
    assert count(org, UsageDay) == 0


def test_thousands_of_errors_are_counted_and_the_first_thousand_listed(org, write):
    lines = [f"A-{n},2026-01-01,1,1,1" for n in range(1500)]
    path = write("account_external_id,date,active_users,seats_used,events\n" + "\n".join(lines) + "\n")

    with pytest.raises(CsvImportError) as caught:
        csv_import(org=org, kind="usage", file=path)

    assert caught.value.count == 1500
    assert len(caught.value.errors) == 1000
    assert str(caught.value.errors[0]).startswith('row 2, column account_external_id: "A-0" is not an account')
    assert str(caught.value) == "1,500 errors; nothing was imported"


def test_a_file_with_only_a_header_imports_nothing(org, write):
    path = write("account_external_id,date,active_users,seats_used,events\n")

    result = csv_import(org=org, kind="usage", file=path)

    assert (result.rows, result.created, result.updated, result.unchanged) == (0, 0, 0, 0)
