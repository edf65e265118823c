from flask_login import login_required

from portal.access import authorize
from portal.admin import bp


@bp.get("/teams")
@login_required
def teams():
    authorize("admin.teams")
    return "teams"
