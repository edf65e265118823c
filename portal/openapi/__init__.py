"""The API's OpenAPI 3.1 document, kept by hand as openapi.yaml beside this module and served as JSON.

Loaded and parsed once, when the portal starts, so a broken document stops the start rather than
the first integrator's request. The served copy names this deployment's session cookie.
"""
from __future__ import annotations

import copy
import json
from importlib.resources import files
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, current_app

bp = Blueprint("openapi", __name__)
DOCUMENT = files(__package__) / "openapi.yaml"


def load_document() -> dict[str, Any]:
    """The document as written (openapi.yaml), for the tests and for serving."""
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


def init_app(app: Flask) -> None:
    document = copy.deepcopy(load_document())
    document["components"]["securitySchemes"]["session"]["name"] = app.config["SESSION_COOKIE_NAME"]
    app.extensions["portal.openapi"] = json.dumps(document, ensure_ascii=False, indent=1)
    app.register_blueprint(bp)


@bp.get("/api/v1/openapi.json")
def openapi_document() -> Response:
    return Response(current_app.extensions["portal.openapi"], mimetype="application/json")
