"""Charts for patients and clinicians, as pages and as the JSON/FHIR API under /api/v1/."""
from portal.records import api, views  # noqa: F401 - registers the pages and the API on bp
from portal.records.blueprint import bp

__all__ = ["bp"]
