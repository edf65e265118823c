"""`make run-npm-idp`: the portal signed in through the independent npm OpenID Provider, by hand.

The same provider the tests use (panva's oidc-provider, tests/oidc_provider), with back-channel
logout and an acr on every sign-in, so a newcomer can see what the built-in development provider
cannot show: single sign-on and ``max_age`` at step-up, the ``acr`` check, and a sign-out at the
provider ending the portal session on every open page. Never for production.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

from tests.support.npm_idp import NpmOidcProvider, demo_accounts, portal_client, portal_oidc_env

CLIENT_ID = "portal-npm-demo"
ACR = "urn:portal:demo:mfa"


def main() -> int:
    port = int(os.environ.get("PORT", "5000"))
    portal_url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(32)
    client = {**portal_client(CLIENT_ID, secret, portal_url),
              "backchannel_logout_uri": f"{portal_url}/auth/backchannel-logout",
              "backchannel_logout_session_required": True}
    with NpmOidcProvider([client], demo_accounts(), acr_values=[ACR], login_acr=ACR) as idp:
        env = {**os.environ, **portal_oidc_env(idp.issuer, CLIENT_ID, secret),
               "PORTAL_EXTERNAL_URL": portal_url, "PORTAL_OIDC_STEP_UP_ACR": ACR}
        print(f"npm OpenID Provider at {idp.issuer}: sign in as demo-alice, demo-chen, demo-reyes, demo-cora or "
              f"demo-adam with any password.\nSign out at the provider ({idp.issuer}/session/end) to watch "
              f"back-channel logout end the portal session on every open page.", flush=True)
        portal = subprocess.Popen([sys.executable, "run.py", "--port", str(port)], env=env)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through the with-block: stop the provider
        try:
            return portal.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            portal.terminate()
            portal.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
