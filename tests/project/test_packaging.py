"""The built wheel is the whole portal: code, templates, static files and migrations (the image installs it)."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.support.environment import ROOT


def test_the_wheel_carries_templates_static_files_and_migrations(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("patient_portal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"portal/templates/{p.relative_to(ROOT / 'templates')}" for p in (ROOT / "templates").rglob("*") if p.is_file()}
    expected |= {f"portal/static/{p.relative_to(ROOT / 'static')}" for p in (ROOT / "static").rglob("*") if p.is_file()}
    expected |= {f"portal/migrations/versions/{p.name}" for p in (ROOT / "portal/migrations/versions").glob("*.py")}
    assert expected - names == set()
    assert {"portal/migrations/env.py", "portal/migrations/script.py.mako", "audit/__main__.py",
            "portal/openapi/openapi.yaml"} <= names
    assert not any(name.startswith(("tests/", "bench/", "instance/")) for name in names)


def test_the_dockerfile_installs_the_wheel_and_copies_no_source_tree():
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert "pip install --no-cache-dir --no-deps /wheels/*.whl" in final_stage
    copied = [word for line in final_stage.splitlines() if line.startswith("COPY ")
              for word in line.split()[1:-1] if not word.startswith("--")]
    assert set(copied) <= {"requirements/pip.txt", "requirements/runtime.txt", "/wheels", "run.py"}, copied


def test_every_package_the_image_and_make_install_is_checked_against_its_hash():
    """pip itself included: a package index or mirror that serves other bytes is refused."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for text in (dockerfile, makefile.split("\nlock:")[0]) for line in text.splitlines()
                if "pip install" in line]
    from_locks = [line for line in installs if "--require-hashes -r" in line]
    the_wheel = [line for line in installs if "--no-deps" in line]
    assert installs and sorted(from_locks + the_wheel) == sorted(installs), installs
    assert "--hash=sha256:" in (ROOT / "requirements/pip.txt").read_text()
