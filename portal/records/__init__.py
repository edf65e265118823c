"""Charts for patients and clinicians, as pages and as the JSON/FHIR API under /api/v1/."""
from flask import Blueprint

bp = Blueprint("records", __name__)

from portal.records import api, views  # noqa: E402,F401  (registers the views on bp)
