"""Where the providers' published API descriptions are: shared/provider-specs beside the checkout."""

import os
from pathlib import Path

PROVIDER_SPECS = Path(
    os.environ.get("VIGIL_PROVIDER_SPECS")
    or next(
        (
            str(candidate)
            for candidate in (
                Path(__file__).resolve().parents[3] / "shared" / "provider-specs",
                Path("/work/shared/provider-specs"),
            )
            if candidate.is_dir()
        ),
        "/work/shared/provider-specs",
    )
)
