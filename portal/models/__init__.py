"""SQLAlchemy 2.0 typed models. They describe data only; the rules live in services and policy."""
from portal.models.chart import Allergy, Condition, LabResult, Medication, Patient, VisitNote
from portal.models.messaging import Conversation, ConversationMember, ConversationRead, Message
from portal.models.smart import SmartApp, SmartAuthorizationCode, SmartGrant, SmartToken
from portal.models.users import (
    LINKED_BY_ADMIN,
    LINKED_BY_CLAIM,
    BreakGlass,
    CareTeam,
    CareTeamMember,
    CareTeamPatient,
    LoginSession,
    SeenLogoutToken,
    SocketConnection,
    User,
)

__all__ = [
    "LINKED_BY_ADMIN", "LINKED_BY_CLAIM",
    "Allergy", "BreakGlass", "CareTeam", "CareTeamMember", "CareTeamPatient", "Condition", "Conversation",
    "ConversationMember", "ConversationRead", "LabResult", "LoginSession", "Medication",
    "Message", "Patient", "SeenLogoutToken", "SmartApp", "SmartAuthorizationCode", "SmartGrant", "SmartToken",
    "SocketConnection", "User", "VisitNote",
]
