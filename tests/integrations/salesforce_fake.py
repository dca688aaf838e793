"""A local Salesforce: SOQL query results shaped like the REST API's, Bulk API 2.0 query jobs, the OAuth
token endpoint, an authorize page that approves at once (302 back with a code), errors.

Query answers are {totalSize, done, records: [{attributes: {type, url}, Id, ...}], nextRecordsUrl}
with nextRecordsUrl = /services/data/v60.0/query/<locator>-<offset>; errors are
[{"message": ..., "errorCode": ...}] as Salesforce sends them.

Bulk query jobs: POST /jobs/query {"operation": "query", "query": SOQL without WHERE/ORDER BY here}
answers the job info in state UploadComplete; GET /jobs/query/<id> answers InProgress, then
JobComplete (or Failed with an errorMessage) after `polls_to_complete` checks; GET
/jobs/query/<id>/results?maxRecords=N&locator=L answers CSV (quoted, LF, a header row on every page,
`Owner.Email` columns for relationship fields, empty for null, datetimes as 2026-03-01T10:01:00.000Z)
with the headers Sforce-NumberOfRecords and Sforce-Locator ("null" on the last page). A job that is
gone (Salesforce deletes finished jobs after 7 days) answers 404 NOT_FOUND.
"""

import base64
import csv
import hashlib
import io
import json
import re
import secrets
from urllib.parse import parse_qs, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integrations.fake_server import FakeProvider, FakeRequest, Reply

API = "/services/data/v60.0"
JOBS = f"{API}/jobs/query"
CLIENT_ID = "3MVG9-fake-consumer-key"
CLIENT_SECRET = "fake-consumer-secret"


def sf_error(code: str, message: str) -> list[dict]:
    return [{"message": message, "errorCode": code}]


def stamp(n: int) -> str:
    """SystemModstamp n minutes after a fixed start, in Salesforce's format."""
    return f"2026-03-01T{10 + n // 60:02d}:{n % 60:02d}:00.000+0000"


class SalesforceFake(FakeProvider):
    def __init__(self, *, page_size: int = 2):
        super().__init__()
        self.page_size = page_size
        self.objects: dict[str, list[dict]] = {"Account": [], "Contact": [], "Opportunity": [], "Task": [], "Event": []}
        self.tokens = {"token-1"}  # access tokens currently valid
        self.refresh_tokens = {"refresh-1"}
        self.codes: dict[str, dict] = {}  # authorization code → {challenge, redirect_uri}
        self.public_key = None  # set by tests of the JWT bearer flow
        self.issued = 0
        self.queries = 0
        self.jobs: dict[str, dict] = {}  # bulk query jobs Salesforce still has, by id
        self.jobs_started: list[str] = []  # every job id ever created, in order
        self.polls_to_complete = 2  # status checks a job answers before it is JobComplete
        self.job_errors: dict[str, str] = {}  # object → errorMessage: jobs on it end Failed with it
        self.route("GET", f"{API}/query")(self._query)
        self.route("POST", JOBS)(self._create_job)
        self.route("POST", "/services/oauth2/token")(self._token)
        self.route("GET", "/services/oauth2/authorize")(self._authorize)

    def add(self, sobject: str, **fields) -> dict:
        n = sum(len(v) for v in self.objects.values()) + 1
        record = {
            "attributes": {"type": sobject, "url": f"{API}/sobjects/{sobject}/{fields.get('Id', n)}"},
            "SystemModstamp": stamp(n),
            **fields,
        }
        self.objects[sobject].append(record)
        return record

    def touch(self, record: dict, **fields) -> None:
        n = sum(len(v) for v in self.objects.values()) + 100 + self.issued
        self.issued += 1
        record.update(fields, SystemModstamp=stamp(n))

    def _authorized(self, request: FakeRequest) -> Reply | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return Reply(401, sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
        return None

    def _query(self, request: FakeRequest) -> Reply:
        refused = self._authorized(request)
        if refused:
            return refused
        soql = request.query["q"]
        count = re.fullmatch(r"SELECT COUNT\(\) FROM (\w+)", soql)
        if count:
            return Reply(200, {"totalSize": len(self.objects[count.group(1)]), "done": True, "records": []})
        match = re.fullmatch(
            r"SELECT (.+) FROM (\w+)(?: WHERE SystemModstamp > (\S+))? ORDER BY SystemModstamp ASC", soql
        )
        if not match:
            return Reply(400, sf_error("MALFORMED_QUERY", f"unexpected query {soql}"))
        sobject, since = match.group(2), match.group(3)
        rows = sorted(self.objects[sobject], key=lambda r: r["SystemModstamp"])
        if since:
            since_key = since.replace("Z", "")  # 2026-03-01T10:05:00 compares with the stamp's prefix
            rows = [r for r in rows if r["SystemModstamp"][:19] > since_key]
        locator = f"01g{self.queries}"  # a query locator per query, numbered from 0
        self.queries += 1
        return self._page(rows, locator, 0)

    def _more(self, request: FakeRequest, rows: list[dict], locator: str) -> Reply:
        refused = self._authorized(request)
        if refused:
            return refused
        return self._page(rows, locator, int(request.path.rsplit("-", 1)[1]))

    def _page(self, rows: list[dict], locator: str, offset: int) -> Reply:
        chunk = rows[offset : offset + self.page_size]
        done = offset + self.page_size >= len(rows)
        body = {"totalSize": len(rows), "done": done, "records": chunk}
        if not done:
            next_url = f"{API}/query/{locator}-{offset + self.page_size}"
            body["nextRecordsUrl"] = next_url
            self.route("GET", next_url)(lambda req, rows=rows, locator=locator: self._more(req, rows, locator))
        return Reply(200, body)

    # --- Bulk API 2.0 query jobs ------------------------------------------------------------------

    def forget_job(self, job_id: str) -> None:
        """Salesforce deleted the job (7 days after it finished, or an admin did): it answers 404 from now on."""
        del self.jobs[job_id]

    def _create_job(self, request: FakeRequest) -> Reply:
        refused = self._authorized(request)
        if refused:
            return refused
        body = request.json()
        soql = body.get("query", "")
        match = re.fullmatch(r"SELECT (.+) FROM (\w+)", soql)
        if body.get("operation") not in ("query", "queryAll") or not match or "(" in match.group(1):
            return Reply(400, sf_error("INVALIDJOB", f"unsupported bulk query: {soql}"))
        fields = [f.strip() for f in match.group(1).split(",")]
        sobject = match.group(2)
        job_id = f"750R{len(self.jobs_started) + 1:011d}AAA"
        self.jobs_started.append(job_id)
        self.jobs[job_id] = {
            "object": sobject,
            "query": soql,
            "state": "UploadComplete",
            "polls": 0,
            # The export is a snapshot: later changes to the records do not show in it.
            "rows": [fields] + [[_csv_cell(record, field) for field in fields] for record in self.objects[sobject]],
            "error": self.job_errors.get(sobject),
        }
        self.route("GET", f"{JOBS}/{job_id}")(self._job_info)
        self.route("GET", f"{JOBS}/{job_id}/results")(self._job_results)
        return Reply(200, self._job_body(job_id))

    def _job_body(self, job_id: str) -> dict:
        job = self.jobs[job_id]
        body = {
            "id": job_id,
            "operation": "query",
            "object": job["object"],
            "createdById": "005000000000001AAA",
            "createdDate": "2026-03-01T12:00:00.000+0000",
            "systemModstamp": "2026-03-01T12:00:00.000+0000",
            "state": job["state"],
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": 60.0,
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if job["polls"]:  # the status answer has the processing figures too
            done = len(job["rows"]) - 1 if job["state"] == "JobComplete" else 0
            body.update(jobType="V2Query", numberRecordsProcessed=done, retries=0, totalProcessingTime=0)
        if job["state"] == "Failed":
            body["errorMessage"] = job["error"]
        return body

    def _job(self, request: FakeRequest) -> tuple[str, dict | None, Reply | None]:
        job_id = request.path.removeprefix(f"{JOBS}/").split("/")[0]
        refused = self._authorized(request)
        if refused:
            return job_id, None, refused
        if job_id not in self.jobs:
            return job_id, None, Reply(404, sf_error("NOT_FOUND", "The requested resource does not exist"))
        return job_id, self.jobs[job_id], None

    def _job_info(self, request: FakeRequest) -> Reply:
        job_id, job, refused = self._job(request)
        if refused:
            return refused
        job["polls"] += 1
        if job["state"] in ("UploadComplete", "InProgress"):
            finished = "Failed" if job["error"] else "JobComplete"
            job["state"] = finished if job["polls"] >= self.polls_to_complete else "InProgress"
        return Reply(200, self._job_body(job_id))

    def _job_results(self, request: FakeRequest) -> Reply:
        job_id, job, refused = self._job(request)
        if refused:
            return refused
        if job["state"] != "JobComplete":
            return Reply(400, sf_error("INVALIDJOBSTATE", f"job {job_id} is {job['state']}, not JobComplete"))
        header, rows = job["rows"][0], job["rows"][1:]
        # Salesforce's locators are opaque strings (its example: MTAwMDA); this one is the offset in base64.
        locator = request.query.get("locator")
        offset = int(base64.b64decode(locator + "=" * (-len(locator) % 4))) if locator else 0
        size = int(request.query.get("maxRecords") or len(rows) or 1)
        chunk = rows[offset : offset + size]
        following = offset + size
        next_locator = (
            base64.b64encode(str(following).encode()).decode().rstrip("=") if following < len(rows) else "null"
        )
        text = io.StringIO()
        csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([header, *chunk])
        return Reply(
            200, text.getvalue(), headers={"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(chunk))}
        )

    def _issue(self, **extra) -> Reply:
        self.issued += 1
        token = f"token-{self.issued + 1}"
        self.tokens.add(token)
        return Reply(
            200,
            {
                "access_token": token,
                "instance_url": self.url,
                "id": f"{self.url}/id/00D000000000001/005000000000001",
                "token_type": "Bearer",
                "issued_at": "1700000000000",
                "signature": "fake",
                **extra,
            },
        )

    def _authorize(self, request: FakeRequest) -> Reply:
        """The authorize page once the user has signed in and approved: back to the app with a new code,
        remembered with its PKCE challenge and redirect_uri for the token endpoint to check."""
        query = request.query
        if query.get("response_type") != "code" or query.get("client_id") != CLIENT_ID or not query.get("redirect_uri"):
            return Reply(400, {"error": "invalid_request", "error_description": "bad authorize request"})
        code = f"aPrx{secrets.token_urlsafe(12)}"
        self.codes[code] = {"challenge": query.get("code_challenge"), "redirect_uri": query["redirect_uri"]}
        back = urlencode({"code": code, "state": query.get("state", "")})
        return Reply(302, "", headers={"Location": f"{query['redirect_uri']}?{back}"})

    def _token(self, request: FakeRequest) -> Reply:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type")
        bad = Reply(400, {"error": "invalid_grant", "error_description": "expired access/refresh token"})
        if grant == "refresh_token":
            if form.get("client_id") != CLIENT_ID or form.get("refresh_token") not in self.refresh_tokens:
                return bad
            return self._issue()
        if grant == "authorization_code":
            entry = self.codes.pop(form.get("code", ""), None)
            if entry is None or form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return bad
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != entry["challenge"] or form.get("redirect_uri") != entry["redirect_uri"]:
                return Reply(400, {"error": "invalid_grant", "error_description": "invalid code verifier"})
            self.refresh_tokens.add("refresh-web")
            return self._issue(refresh_token="refresh-web")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if self.public_key is None or not self._valid_jwt(form.get("assertion", "")):
                return Reply(400, {"error": "invalid_grant", "error_description": "invalid assertion"})
            return self._issue()
        return Reply(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})

    def _valid_jwt(self, assertion: str) -> bool:
        def unb64(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        try:
            header, claims, signature = assertion.split(".")
            self.public_key.verify(unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return False
        payload = json.loads(unb64(claims))
        self.jwt_claims = payload
        return (
            payload.get("iss") == CLIENT_ID and bool(payload.get("sub")) and payload.get("aud") and payload.get("exp")
        )


def _csv_cell(record: dict, field: str) -> str:
    """One cell as Bulk API 2.0 writes it: `Owner.Email` follows the relationship, null is empty."""
    value = record
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.endswith("+0000"):
        return value.removesuffix("+0000") + "Z"  # datetimes in bulk results are UTC with a Z
    return str(value)


def rsa_key_pair():
    """(private key PEM, public key) for the JWT bearer flow."""
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()
