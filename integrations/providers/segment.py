"""Product usage pushed to us (Segment-style track / identify / group): nothing to pull."""

from integrations.http import ProviderClient, RequestBudget
from integrations.sync import Connector, ConnectorField, register


@register
class SegmentConnector(Connector):
    provider = "segment"
    purpose = "Product usage: track, identify and group calls posted to Vigil, counted per account and day."
    syncs = False
    credential_fields = [
        ConnectorField(
            "shared_secret",
            "Shared secret",
            help="Sign each request body with HMAC-SHA256 and send it as X-Vigil-Signature: sha256=<hex>. "
            "At least 32 characters.",
        )
    ]

    def client(self, budget: RequestBudget) -> ProviderClient | None:
        return None

    def streams(self):
        return []

    def test(self, client) -> str:
        secret = self.secrets.get("shared_secret", "")
        if len(secret) < 32:
            return "The shared secret is shorter than 32 characters: choose a longer one."
        return (
            f"Ready: POST events to /intake/{self.connection.org.slug}/v1/batch (or /track, /identify, /group) "
            "signed with the shared secret."
        )
