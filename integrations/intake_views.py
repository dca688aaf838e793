"""The usage intake endpoint: POST /intake/<org_slug>/v1/<track|identify|group|batch>.

No session and no CSRF: a sender proves itself with the HMAC of the raw body (X-Vigil-Signature).
The view enters the tenant itself, inside the request's transaction (ATOMIC_REQUESTS), the way
token authentication does: the organization is found by slug (organizations are not under RLS),
and its connection and secret are read only once that tenant is entered.
"""

from django.http import JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from accounts.models import Organization
from csm.tenancy import enter_org
from integrations import intake

# One answer for an unknown organization, a missing secret and a wrong signature: the endpoint
# does not reveal which organizations exist or have connected usage.
UNAUTHORIZED = {
    "success": False,
    "error": (
        f"The signature does not match. Sign the raw request body with HMAC-SHA256 and your organization's "
        f"shared secret, and send it as {intake.SIGNATURE_HEADER}: sha256=<hex digest>."
    ),
}


def _refuse(status: int, message: str) -> JsonResponse:
    return JsonResponse({"success": False, "error": message}, status=status)


@method_decorator(csrf_exempt, name="dispatch")
class IntakeView(View):
    http_method_names = ["post"]

    def post(self, request, org_slug: str, call: str):
        if call not in (*intake.CALLS, "batch"):
            return _refuse(404, f"Unknown call /{call[:40]}: send track, identify, group or batch.")
        limit = intake.MAX_BODY_BYTES
        too_big = f"The body is larger than {limit // (1024 * 1024)} MB; split it into smaller batches."
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit():
            return _refuse(400, "The Content-Length header is not a number.")
        if int(declared) > limit:
            return _refuse(413, too_big)
        body = request.body
        if len(body) > limit:
            return _refuse(413, too_big)

        org = Organization.objects.filter(slug=org_slug).first()
        connection, secret = None, None
        if org is not None:
            enter_org(org)
            connection, secret = intake.intake_connection(org=org)
        header = request.headers.get(intake.SIGNATURE_HEADER, "")
        if not intake.signature_valid(secret=secret, body=body, header=header):
            return JsonResponse(UNAUTHORIZED, status=401)

        received_at = timezone.now()
        try:
            events = intake.payload_parse(call=call, body=body, tz=org.tz, received_at=received_at)
        except intake.IntakeRejected as rejected:
            return JsonResponse(rejected.as_json(), status=rejected.status)
        result = intake.events_ingest(org=org, connection=connection, events=events, received_at=received_at)
        return JsonResponse(result.as_json())
