"""pytest fixtures for the package tests (tests/packaging, `make check-packaging`).

The packages are built by the Makefile before pytest runs (build/tidegate_<v>_<arch>.deb,
the trees in build/deb/<arch>/). The broker/daemon fixtures are the integration suite's,
loaded from tests/integration/conftest.py under another module name.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))

_spec = importlib.util.spec_from_file_location("integration_conftest", REPO / "tests/integration/conftest.py")
integration_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(integration_conftest)
certs = integration_conftest.certs
broker = integration_conftest.broker
daemons = integration_conftest.daemons
pytest_configure = integration_conftest.pytest_configure

VERSION = subprocess.run(["dpkg-parsechangelog", "-l", str(REPO / "packaging/debian/changelog"), "-S", "Version"],
                         check=True, capture_output=True, text=True).stdout.strip()


def deb_path(arch):
    p = REPO / "build" / f"tidegate_{VERSION}_{arch}.deb"
    assert p.exists(), f"{p} is missing: `make deb ARCH={arch}` builds it"
    return p


@pytest.fixture(scope="session")
def host_arch():
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()
