"""The shipped docs and configs stay true to the code."""
import subprocess

import harness


def test_config_reference_is_current():
    out = subprocess.run([harness.BUILD / "tidegate", "config-reference"], capture_output=True, text=True, check=True)
    doc = (harness.REPO / "docs" / "config-reference.md").read_text()
    assert out.stdout == doc, "docs/config-reference.md is stale: run `build/rel/tidegate config-reference > docs/config-reference.md`"


def test_shipped_config_is_valid(tmp_path, certs):
    # check-config reads the files the config names: map the installed paths to real ones
    text = harness.installed_paths((harness.REPO / "packaging" / "etc" / "tidegate.conf").read_text(), certs, tmp_path)
    r = subprocess.run([harness.BUILD / "tidegate", "check-config", "-c", "/dev/stdin"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "key_file = <redacted>" in r.stdout


def test_bad_config_names_file_line_col(tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text("gateway_id = x\n[broker]\ntls = false\nport = seven\n")
    r = subprocess.run([harness.BUILD / "tidegate", "run", "-c", p], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{p}:4:8: option 'port'" in r.stderr
