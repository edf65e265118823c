"""What one part of the portal announces and others act on, without importing each other.

In the manner of Flask's own ``flask.signals``: the sender announces, receivers connect where they
are defined. Receivers run in the sender's request (or task) and must not raise into it.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: An audit entry was durably appended. Sent with ``entry=`` (an ``audit.Entry``) by ``portal.access``;
#: the compliance live feed shows it.
audit_entry_appended = _signals.signal("audit-entry-appended")

#: Sign-in sessions ended (sign-out, revocation, back-channel logout, time-out). Sent with
#: ``login_session_ids=`` and ``reason=`` by ``portal.auth.sessions``; their Socket.IO connections are cut.
sessions_ended = _signals.signal("sessions-ended")
