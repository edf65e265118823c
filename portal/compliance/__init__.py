"""The compliance officers' console: audit search, flags, integrity, exports, live feed."""
from flask import Blueprint

bp = Blueprint("compliance", __name__)

from portal.compliance import feed, views  # noqa: E402,F401
