"""pytest fixtures for the integration suite (see harness.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped in the sanitizer pass")
    config.addinivalue_line("markers", "chaos: the short chaos run, in `make chaos` and not in `make check` (test_chaos.py)")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return harness.Certs(tmp_path_factory.mktemp("certs"), things=10)


@pytest.fixture(scope="session")
def cloud_certs(tmp_path_factory):
    """A second, unrelated CA and its certs: the cloud broker's (issue 17), so the gateway's
    site certificate means nothing there."""
    return harness.Certs(tmp_path_factory.mktemp("cloud-certs"), things=1)


@pytest.fixture
def broker(certs, tmp_path):
    b = harness.Broker(certs, tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def daemons(tmp_path):
    """Factory: daemons(broker, extra=..., sinks=...) -> started Daemon, stopped at teardown."""
    made = []

    def make(broker, start=True, **kw):
        d = harness.Daemon(broker, tmp_path, name=f"tidegate{len(made) or ''}", **kw)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        rc = d.stop()
        # a sanitizer report makes the daemon exit non-zero: fail the test on it
        assert rc in (0, None, -9), f"tidegate exited {rc}\n{d.log()[-4000:]}"
