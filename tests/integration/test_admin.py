"""Administrators manage care teams; access follows membership immediately."""
import re

from tests.support.portal_server import sign_in

ALICE = "00000000-0000-4000-8000-000000000001"


def form_ids(page: str, team_name: str) -> tuple[str, str]:
    team_id = re.search(rf'id="team-([0-9a-f-]+)">{team_name} ', page).group(1)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    return team_id, token


def test_adding_and_removing_a_clinician_changes_chart_access(portal):
    adam, reyes = sign_in(portal.url, "adam"), sign_in(portal.url, "dr.reyes")
    page = adam.get(portal.url + "/admin/teams", timeout=10).text
    team_id, token = form_ids(page, "Family Medicine")
    reyes_id = re.search(r'<option value="([0-9a-f-]+)">Dr. Ana Reyes</option>', page).group(1)
    assert reyes.get(portal.url + f"/patients/{ALICE}", timeout=10).status_code == 403

    added = adam.post(portal.url + f"/admin/teams/{team_id}/clinicians",
                      data={"csrf_token": token, "user_id": reyes_id}, timeout=10)
    assert added.status_code == 200 and "Dr. Ana Reyes is now on Family Medicine" in added.text
    assert reyes.get(portal.url + f"/patients/{ALICE}", timeout=10).status_code == 200

    adam.post(portal.url + f"/admin/teams/{team_id}/clinicians/{reyes_id}/remove", data={"csrf_token": token}, timeout=10)
    assert reyes.get(portal.url + f"/patients/{ALICE}", timeout=10).status_code == 403


def test_bad_team_input_is_refused_with_a_message(portal):
    adam = sign_in(portal.url, "adam")
    page = adam.get(portal.url + "/admin/teams", timeout=10).text
    team_id, token = form_ids(page, "Cardiology")
    unknown = adam.post(portal.url + f"/admin/teams/{team_id}/patients", data={"csrf_token": token, "mrn": "RC-999999"},
                        timeout=10)
    assert unknown.status_code == 400 and "No patient has that MRN" in unknown.text
    duplicate = adam.post(portal.url + "/admin/teams", data={"csrf_token": token, "name": "Cardiology"}, timeout=10)
    assert duplicate.status_code == 400


def test_only_administrators_manage_teams(portal):
    chen = sign_in(portal.url, "dr.chen")
    assert chen.get(portal.url + "/admin/teams", timeout=10).status_code == 403
