"""The records blueprint, shared by the pages (``views``) and the JSON API (``api``)."""
from flask import Blueprint

bp = Blueprint("records", __name__)
