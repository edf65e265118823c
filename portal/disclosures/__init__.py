"""Accounting of disclosures: who accessed a patient's chart, for the patient and for compliance officers."""
from flask import Blueprint

bp = Blueprint("disclosures", __name__)

from portal.disclosures import views  # noqa: E402,F401  (registers the views on bp)
