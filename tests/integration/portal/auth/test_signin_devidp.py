"""Sign-in through the built-in development provider, over real HTTP, for each role."""
import pytest
import requests

from tests.support.portal_server import sign_in


@pytest.mark.parametrize("login, home", [
    ("alice", "/chart"), ("dr.chen", "/clinician"), ("cora", "/compliance/"), ("adam", "/admin/teams"),
])
def test_each_role_lands_on_its_home_page(portal, login, home):
    session = sign_in(portal.url, login)
    response = session.get(portal.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.url == portal.url + home


def test_user_without_a_portal_role_sees_no_access_page(portal):
    session = sign_in(portal.url, "nora")
    response = session.get(portal.url + "/", timeout=10)
    assert response.status_code == 403
    assert "no access to the portal" in response.text


def test_pages_need_sign_in(portal):
    response = requests.get(portal.url + "/chart", timeout=10, allow_redirects=False)
    assert response.status_code == 302
    assert "/auth/signin" in response.headers["Location"]
