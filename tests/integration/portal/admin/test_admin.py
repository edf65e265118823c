"""Administrators manage care teams; access follows membership immediately.

In process (tests/support/harness.py); the administrator's home page over real HTTP is in test_signin_devidp.py."""
import re

from tests.support.seed import ALICE


def form_ids(page: str, team_name: str) -> tuple[str, str]:
    team_id = re.search(rf'id="team-([0-9a-f-]+)">{team_name} ', page).group(1)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    return team_id, token


def test_adding_and_removing_a_clinician_changes_chart_access(login_as):
    adam, reyes = login_as("adam"), login_as("dr.reyes")
    page = adam.get("/admin/teams", timeout=10).text
    team_id, token = form_ids(page, "Family Medicine")
    reyes_id = re.search(r'<option value="([0-9a-f-]+)">Dr. Ana Reyes</option>', page).group(1)
    assert reyes.get(f"/patients/{ALICE}", timeout=10).status_code == 403

    added = adam.post(f"/admin/teams/{team_id}/clinicians",
                      data={"csrf_token": token, "user_id": reyes_id}, timeout=10)
    assert added.status_code == 200 and "Dr. Ana Reyes is now on Family Medicine" in added.text
    assert reyes.get(f"/patients/{ALICE}", timeout=10).status_code == 200

    adam.post(f"/admin/teams/{team_id}/clinicians/{reyes_id}/remove", data={"csrf_token": token}, timeout=10)
    assert reyes.get(f"/patients/{ALICE}", timeout=10).status_code == 403


def test_bad_team_input_is_refused_with_a_message(login_as):
    adam = login_as("adam")
    page = adam.get("/admin/teams", timeout=10).text
    team_id, token = form_ids(page, "Cardiology")
    unknown = adam.post(f"/admin/teams/{team_id}/patients", data={"csrf_token": token, "mrn": "RC-999999"},
                        timeout=10)
    assert unknown.status_code == 400 and "No patient has that MRN" in unknown.text
    duplicate = adam.post("/admin/teams", data={"csrf_token": token, "name": "Cardiology"}, timeout=10)
    assert duplicate.status_code == 400


def test_only_administrators_manage_teams(login_as):
    chen = login_as("dr.chen")
    assert chen.get("/admin/teams", timeout=10).status_code == 403
