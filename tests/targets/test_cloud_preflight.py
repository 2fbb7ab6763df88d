"""Without credentials a cloud run stops before the first cloud call, naming what is missing, without a traceback."""


import pytest
from conftest import REPO, ansible_playbook, clean_env

PLAYBOOKS = ["tests/targets/cluster_roles.yml"]
SITE = REPO / "playbooks" / "site.yml"


def run(target, home, playbook, **env):
    r = ansible_playbook("-i", f"inventories/{target}", playbook, "--check", env=clean_env(home, **env))
    return r.returncode, r.stdout + r.stderr


def site_wired(role):
    return any(role in p.read_text() for p in (REPO / "playbooks").glob("*.yml"))


def playbooks_for(role):
    if site_wired(role):
        return [*PLAYBOOKS, "playbooks/site.yml"]
    return PLAYBOOKS


@pytest.mark.parametrize("playbook", playbooks_for("gke_cluster"))
def test_gke_without_project_names_the_variables(tmp_path, playbook):
    rc, out = run("gke", tmp_path, playbook)
    assert rc != 0
    assert "GCP_PROJECT" in out and "gke_cluster_project" in out, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.parametrize("playbook", playbooks_for("gke_cluster"))
def test_gke_without_key_file_names_the_variables(tmp_path, playbook):
    rc, out = run("gke", tmp_path, playbook, GCP_PROJECT="example-project")
    assert rc != 0
    assert "GCP_SERVICE_ACCOUNT_FILE" in out and "GOOGLE_APPLICATION_CREDENTIALS" in out, out[-3000:]
    assert "Traceback" not in out


def test_gke_with_a_missing_key_file_names_it(tmp_path):
    missing = tmp_path / "nowhere.json"
    rc, out = run("gke", tmp_path, PLAYBOOKS[0], GCP_PROJECT="example-project", GCP_SERVICE_ACCOUNT_FILE=str(missing))
    assert rc != 0
    assert f"GCP credentials file {missing} does not exist" in out, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.parametrize("playbook", playbooks_for("eks_cluster"))
def test_eks_without_region_names_the_variables(tmp_path, playbook):
    rc, out = run("eks", tmp_path, playbook)
    assert rc != 0
    assert "AWS_REGION" in out and "eks_cluster_region" in out, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.parametrize("playbook", playbooks_for("eks_cluster"))
def test_eks_without_credentials_names_the_variables(tmp_path, playbook):
    rc, out = run("eks", tmp_path, playbook, AWS_REGION="us-east-1")
    assert rc != 0
    assert "No AWS credentials" in out and "AWS_ACCESS_KEY_ID" in out and "AWS_PROFILE" in out, out[-3000:]
    assert "Traceback" not in out


def test_eks_without_subnets_names_the_variables(tmp_path):
    rc, out = run("eks", tmp_path, PLAYBOOKS[0], AWS_REGION="us-east-1", AWS_PROFILE="example")
    assert rc != 0
    assert "eks_cluster_subnet_ids" in out and "EKS_SUBNET_IDS" in out, out[-3000:]
    assert "Traceback" not in out


def test_unusable_key_file_stops_before_any_cloud_call(tmp_path):
    """With every credential variable set but a key file that is no service-account key, the run stops on this
    machine with a message saying what is wrong: either a missing controller tool (google-auth, requests,
    gke-gcloud-auth-plugin: which one depends on the machine) or the key's missing fields, parsed locally by
    google-auth before any request is made."""
    key = tmp_path / "key.json"
    key.write_text("{}")
    rc, out = run("gke", tmp_path, PLAYBOOKS[0], GCP_PROJECT="example-project", GCP_SERVICE_ACCOUNT_FILE=str(key))
    assert rc != 0
    # google-auth lists the missing fields from a set, so their order changes with the hash seed: match each one.
    key_rejected = ("Service account info was not in the expected format, missing fields" in out
                    and "client_email" in out and "token_uri" in out)
    assert "Missing on the controller:" in out or key_rejected, out[-3000:]
    assert "Traceback" not in out
