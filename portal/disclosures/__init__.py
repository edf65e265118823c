"""Accounting of disclosures: who accessed a patient's chart, for the patient and for compliance officers."""
from portal.disclosures.views import bp

__all__ = ["bp"]
