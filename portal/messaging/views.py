"""The chat page and the form that starts a conversation; live traffic goes through ``events``."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from portal import services
from portal.access import authorize, record
from portal.actions import Action
from portal.exceptions import InvalidInput
from portal.messaging import service
from portal.people import not_linked_message, own_patient_id

bp = Blueprint("messaging", __name__)


@bp.get("/messages")
@login_required
def chat():
    user = current_user._get_current_object()
    conversations = service.list_conversations(user)
    record(Action.CONVERSATION_LIST, "allowed", details={"count": len(conversations)})
    requested = service.parse_uuid(request.args.get("c"))
    selected = requested if any(c.id == requested for c in conversations) else None
    settings = services.settings()
    return render_template(
        "messaging/chat.html",
        conversations=conversations,
        selected=selected,
        clinicians=service.clinicians_except(user) if user.has_role("clinician") else [],
        not_linked=not_linked_message(user) if user.has_role("patient") and not user.patient_id else None,
        max_bytes=settings.message_max_bytes,
        page_size=min(50, settings.history_page_max),
    )


@bp.post("/messages/start")
@login_required
def start():
    """Clinicians: open (or create) a direct conversation. Patients: open their care-team thread."""
    user = current_user._get_current_object()
    if user.has_role("patient") and not request.form.get("clinician"):
        conversation = service.get_or_create_patient_thread(own_patient_id(user))
        authorize(Action.CONVERSATION_JOIN, conversation)
        return redirect(url_for("messaging.chat", c=conversation.id))
    other = service.get_user(service.parse_uuid(request.form.get("clinician")))
    authorize(Action.CONVERSATION_START, details={"kind": "direct", "with": other.id if other else None})
    if other is None:
        raise InvalidInput("bad_request", "Choose a clinician to message.")
    conversation = service.get_or_create_direct(user, other)
    return redirect(url_for("messaging.chat", c=conversation.id))
