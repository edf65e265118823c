"""deploy/nginx.conf served by a real nginx in front of two real workers (PostgreSQL, Redis).

The file is used as it is, except for what a test machine must change: the listening addresses, the
certificate paths and the worker list (deploy/nginx-workers.conf's lines, pointed at the test workers);
each substitution must match exactly once, so the test notices when the file changes shape. Around it,
the test's own http block lets a request pose as coming from elsewhere (the realip module reads the
client address from X-Forwarded-For), which is how /metrics and /readyz are shown to be refused to the
outside and served to the internal network. Also proven: TLS to a worker, the http-to-https redirect,
Socket.IO over a WebSocket through /socket.io/ (the Upgrade headers), and a long-polling client whose
every request reaches the one worker holding its session (ip_hash).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import socketio

from tests.support.chat import team_conversation
from tests.support.environment import IN_CI, ROOT, free_port
from tests.support.portal_server import another_worker, running_portal, sign_in
from tests.support.shared_services import create_database, drop_database, postgres_server_url, redis_url

TOKEN = {"Authorization": "Bearer test-metrics-token"}
OUTSIDE, INSIDE = "203.0.113.7", "10.20.30.40"  # TEST-NET-3 (documentation) and a private address
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        reason = "nginx is installed by `make test` (Debian: apt-get install nginx)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _substitute(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}"
    return text.replace(old, new)


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=portal.example.org",
                    "-addext", "subjectAltName=DNS:portal.example.org,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class Nginx:
    def __init__(self, binary: str, folder: Path, workers: list[str]):
        self.binary, self.folder, self.tls_port, self.http_port = binary, folder, free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.tls_port}"
        cert, key = _certificate(folder)
        self.certificate = str(cert)
        (folder / "portal-workers.conf").write_text("".join(
            f"server {address} max_fails=2 fail_timeout=10s;\n" for address in workers))
        site = (ROOT / "deploy/nginx.conf").read_text()
        site = _substitute(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{self.tls_port} ssl http2;")
        site = _substitute(site, "listen 80;", f"listen 127.0.0.1:{self.http_port};")
        site = _substitute(site, "/etc/ssl/portal/fullchain.pem", str(cert))
        site = _substitute(site, "/etc/ssl/portal/privkey.pem", str(key))
        site = _substitute(site, "include /etc/nginx/portal-workers.conf;", f"include {folder / 'portal-workers.conf'};")
        (folder / "portal.conf").write_text(site)
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir()
        (folder / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    log_format upstreams '$remote_addr "$request" $status $upstream_addr';
    access_log {folder / "access.log"} upstreams;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    # The test's own: a request's client address is its X-Forwarded-For, so it can pose as an outsider.
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    include {folder / "portal.conf"};
}}
""")
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        config = ["-p", str(self.folder), "-c", str(self.folder / "nginx.conf")]
        checked = subprocess.run([self.binary, "-t", *config], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen([self.binary, *config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                requests.get(self.url + "/healthz", verify=self.certificate, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError((self.folder / "error.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def answers(self, path_prefix: str) -> list[tuple[str, str]]:
        """(status, worker address) of each request nginx passed on whose path starts with ``path_prefix``."""
        lines = (self.folder / "access.log").read_text().splitlines()
        return [tuple(line.rsplit(" ", 2)[1:]) for line in lines if re.search(rf'"\w+ {re.escape(path_prefix)}', line)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """nginx with deploy/nginx.conf in front of two workers sharing PostgreSQL and the Redis message queue."""
    postgres_server_url()  # skipped (failed in CI) without PostgreSQL or Redis
    queue = redis_url()
    binary = _nginx_binary()
    tmp = tmp_path_factory.mktemp("nginx")
    database_url = create_database()
    try:
        with running_portal(tmp / "portal", database_url, PORTAL_MESSAGE_QUEUE=queue, PORTAL_TRUSTED_PROXIES="1") as first, \
                another_worker(first) as second:
            (tmp / "nginx").mkdir()
            nginx = Nginx(binary, tmp / "nginx", [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]).start()
            try:
                yield nginx, first, second
            finally:
                nginx.stop()
    finally:
        drop_database(database_url)


def _get(nginx: Nginx, path: str, client: str | None = None, **headers: str) -> requests.Response:
    if client:
        headers["X-Forwarded-For"] = client
    return requests.get(nginx.url + path, headers=headers, verify=nginx.certificate, allow_redirects=False, timeout=10)


def test_readiness_and_metrics_only_for_the_internal_network(stack):
    nginx, _, _ = stack
    for client in (None, INSIDE, "192.168.7.8", "172.20.0.5"):
        assert _get(nginx, "/readyz", client).status_code == 200, client
        metrics = _get(nginx, "/metrics", client, **TOKEN)
        assert metrics.status_code == 200 and "process_cpu_seconds_total" in metrics.text, client
    for client in (OUTSIDE, "8.8.4.4", "172.32.0.1"):
        assert _get(nginx, "/readyz", client).status_code == 403, client
        assert _get(nginx, "/metrics", client, **TOKEN).status_code == 403, client
    # Everything else stays public.
    assert _get(nginx, "/healthz", OUTSIDE).json() == {"status": "alive"}
    assert _get(nginx, "/", OUTSIDE).status_code == 200
    assert _get(nginx, "/api/v1/openapi.json", OUTSIDE).status_code == 200


def test_plain_http_redirects_to_https(stack):
    nginx, _, _ = stack
    answer = requests.get(f"http://127.0.0.1:{nginx.http_port}/chart", allow_redirects=False, timeout=10)
    assert answer.status_code == 301 and answer.headers["Location"].startswith("https://")


def test_socketio_through_nginx_over_websocket_and_sticky_long_polling(stack):
    nginx, first, _ = stack
    session = sign_in(first.url, "dr.chen")  # the cookie is for 127.0.0.1, whatever the port
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    team = team_conversation(first.url, session, "Family Medicine")
    for transport in ("websocket", "polling"):
        # The browser's origin is the portal's external URL (PORTAL_EXTERNAL_URL, the only one Socket.IO accepts).
        websocket = transport == "websocket"
        verified = requests.Session()
        verified.verify = nginx.certificate
        verified.trust_env = False  # or REQUESTS_CA_BUNDLE from the environment would replace the test's certificate
        client = socketio.Client(reconnection=False, http_session=verified,
                                 websocket_extra_options={"origin": first.url} if websocket else None)
        headers = {"Cookie": cookie} if websocket else {"Cookie": cookie, "Origin": first.url}
        client.connect(nginx.url, headers=headers, namespaces=["/chat"], transports=[transport], wait_timeout=10)
        try:
            assert client.transport() == transport
            for _ in range(3):  # each a request and an answer, through nginx, on the worker holding the session
                answer = client.call("history", {"conversation_id": team}, namespace="/chat", timeout=10)
                assert answer["conversation_id"] == team and "messages" in answer, answer
        finally:
            client.disconnect()
    # The WebSocket was upgraded through nginx (101); long-polling is many requests, and ip_hash kept every
    # one of them on the worker holding the session (another worker would answer 400, unknown session).
    assert [status for status, _ in nginx.answers("/socket.io/?transport=websocket")] == ["101"]
    polled = nginx.answers("/socket.io/?transport=polling")
    assert len(polled) >= 4 and {status for status, _ in polled} == {"200"}, polled
    assert len({worker for _, worker in polled}) == 1, polled
