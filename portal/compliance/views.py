from flask_login import login_required

from portal.access import authorize
from portal.compliance import bp


@bp.get("/")
@login_required
def console():
    authorize("audit.search")
    return "console"


@bp.get("/flags")
@login_required
def flags():
    authorize("audit.search")
    return "flags"


@bp.get("/integrity")
@login_required
def integrity():
    authorize("audit.verify")
    return "integrity"
