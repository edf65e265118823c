from flask_login import login_required

from portal.messaging import bp


@bp.get("/messages")
@login_required
def chat():
    return "chat"
