from tests.e2e.conftest import check_accessibility, sign_in, screenshot

def test_smoke(new_page):
    page = new_page()
    page.goto("/auth/login")
    print(page.url)
    check_accessibility(page, "dev sign-in")
    sign_in(page, "alice")
    print(page.url)
    check_accessibility(page, "chart")
    print(screenshot(page, "x"))
