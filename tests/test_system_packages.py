""".ci/system-packages.sh, the system-package step of `make demo` / `make test` and CI: run for
real with stand-in dpkg, apt-get, id and sudo programs on PATH (the script decides; the stand-ins
only answer "installed?", "who am I?" and record what apt-get was asked)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "system-packages.sh"


def fake_system(tmp_path, installed: list[str], uid: int = 1000, sudo: bool = False) -> dict:
    """A PATH whose dpkg knows only `installed`, whose id -u says `uid`, whose apt-get logs its
    arguments, and whose sudo (if any) runs the command without a password."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "apt.log"
    scripts = {
        "dpkg": "#!/bin/sh\n[ \"$1\" = -s ] || exit 2\ncase \" %s \" in *\" $2 \"*) "
                "echo \"Package: $2\"; echo 'Status: install ok installed'; exit 0;; esac\n"
                "echo \"dpkg-query: package '$2' is not installed\" >&2; exit 1\n" % " ".join(installed),
        "apt-get": f"#!/bin/sh\necho \"$@\" >> {log}\n",
        "id": f"#!/bin/sh\necho {uid}\n",
    }
    if sudo:
        scripts["sudo"] = "#!/bin/sh\n[ \"$1\" = -n ] && shift\n[ \"$1\" = true ] && exit 0\nexec \"$@\"\n"
    for name, text in scripts.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    for tool in ("env",):  # the only other program the script runs; nothing else on PATH
        (bin_ / tool).symlink_to(shutil.which(tool))
    env = dict(os.environ, PATH=str(bin_))
    return {"env": env, "log": log}


def run(args, fake):
    return subprocess.run([shutil.which("bash"), str(SCRIPT), *args], env=fake["env"], capture_output=True, text=True,
                          timeout=30)


ALL = "libgomp1 libusb-1.0-0 libgl1 libegl1 libvulkan1 mesa-vulkan-drivers".split()


def test_nothing_missing_installs_nothing(tmp_path):
    fake = fake_system(tmp_path, ALL)
    r = run(["test"], fake)
    assert r.returncode == 0 and r.stderr == "" and not fake["log"].exists()


def test_missing_package_without_root_or_sudo_stops_at_once_with_the_install_line(tmp_path):
    fake = fake_system(tmp_path, [p for p in ALL if p != "libusb-1.0-0"])
    r = run(["test"], fake)
    assert r.returncode == 1
    assert r.stderr.strip() == ("missing system packages: libusb-1.0-0; install them with: sudo apt-get update "
                                "&& sudo apt-get install -y --no-install-recommends libusb-1.0-0")
    assert not fake["log"].exists(), "apt-get must not be tried without root"


def test_check_mode_reports_without_installing_even_as_root(tmp_path):
    fake = fake_system(tmp_path, ["libgomp1"], uid=0)
    r = run(["--check", "test"], fake)
    assert r.returncode == 1 and "missing system packages: libusb-1.0-0 libgl1 libegl1 libvulkan1 " \
        "mesa-vulkan-drivers;" in r.stderr
    assert not fake["log"].exists()


def test_demo_needs_fewer_packages_than_test(tmp_path):
    fake = fake_system(tmp_path, ["libgomp1"])
    assert run(["demo"], fake).returncode == 0, "the demo opens no window: open3d/Vulkan are not needed"
    assert run(["test"], fake).returncode == 1


@pytest.mark.parametrize("uid,sudo", [(0, False), (1000, True)])
def test_root_or_passwordless_sudo_installs_only_the_missing_packages(tmp_path, uid, sudo):
    fake = fake_system(tmp_path, [p for p in ALL if p not in ("libvulkan1", "mesa-vulkan-drivers")], uid, sudo)
    r = run(["test"], fake)
    assert r.returncode == 0, r.stderr
    calls = fake["log"].read_text().splitlines()
    assert calls == ["update -qq", "install -y -qq --no-install-recommends libvulkan1 mesa-vulkan-drivers"]
