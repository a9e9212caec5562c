"""The Hub adapter (core/adapters/hub.py) against the project's local Hub server, with the real huggingface_hub
client: the
retry policy, a cancel during its backoff, one set of error codes for every stage, the endpoint and the repo id
rules. The stages' own behaviour is in their tests (test_publish, test_base_model, test_hf_dataset, test_resume)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from core.adapters.hub import (
    CODES,
    HubTarget,
    RetryPolicy,
    call_hub,
    check_repo_id,
    hub_endpoint,
    is_repo_id,
    offline_error,
    repo_path,
)
from core.cancel import Cancel
from core.errors import (
    DownloadError,
    HubAuthError,
    HubConflict,
    HubQuotaError,
    JobCancelled,
    JobError,
    JobTimeout,
    ModelDownloadError,
    PublishError,
    ResumeError,
    SpecError,
)
from core.events import LogLine
from tests.support.hub_server import running_hub_server

TOKEN = "hf_HubAdapterTestToken0123456789abcdefXYZ"
REPO = "tester/some-model"
FAST = RetryPolicy(attempts=4, backoff_s=0.01)
# The stage each error class stands for, and the field a read or a write names.
STAGES = [(PublishError, "publish"), (ModelDownloadError, "model"), (DownloadError, "dataset"), (ResumeError, "resume")]


@pytest.fixture
def hub(tmp_path: Path):
    with running_hub_server(tmp_path, token=TOKEN) as server:
        server.add_repo(REPO, private=True, files={"config.json": b"{}"})
        yield server


def target(hub, family=ModelDownloadError, **overrides) -> HubTarget:
    values = dict(repo_id=REPO, family=family, field="config.model_name", endpoint=hub.endpoint, token=TOKEN)
    return HubTarget(**{**values, **overrides})


def info_of(repo: str, hub, token: str | None = TOKEN):
    api = HfApi(endpoint=hub.endpoint, token=token)
    return lambda: api.model_info(repo)


def test_a_500_then_200_is_retried_once_and_says_so(hub):
    hub.fail_next(r"^/api/models/", 500, body={"error": "Internal Error"})
    events: list = []
    info = call_hub(info_of(REPO, hub), target=target(hub), what="checking the model", retry=FAST,
                    on_event=events.append)
    assert info.sha == hub.repos[REPO].head.oid
    assert [r.status for r in hub.requests_to(r"^/api/models/")] == [500, 200]
    said = [e.message for e in events if isinstance(e, LogLine)]
    assert said == ["the Hub answered 500 while checking the model; retrying in 0.0s (attempt 2 of 4)"]


def test_429_a_dropped_connection_and_an_html_error_page_are_retried_too(hub):
    hub.fail_next(r"^/api/models/", 429)
    hub.fail_next(r"^/api/models/", drop=True)
    hub.fail_next(r"^/api/models/", 502, body="<html><body>502 Bad Gateway</body></html>")
    call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=FAST)
    assert [r.status for r in hub.requests_to(r"^/api/models/")] == [429, 0, 502, 200]


def test_a_hub_that_keeps_failing_is_unavailable_after_every_attempt(hub):
    hub.fail_next(r"^/api/models/", 503, times=10, body={"error": "the storage backend is down"})
    with pytest.raises(ModelDownloadError) as caught:
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=RetryPolicy(attempts=3, backoff_s=0))
    error = caught.value
    assert (error.code, error.stage, error.field) == ("hub_unavailable", "model", "config.model_name")
    assert "the storage backend is down" in error.message and "3 attempts" in error.message
    assert len(hub.requests_to(r"^/api/models/")) == 3


def test_an_unreachable_endpoint_is_unavailable_and_names_it(hub):  # hub: this process goes online
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    api = HfApi(endpoint=closed, token=TOKEN)
    with pytest.raises(ResumeError) as caught:
        call_hub(lambda: api.model_info(REPO), target=HubTarget(REPO, family=ResumeError, field="resume_from",
                                                                endpoint=closed, token=TOKEN),
                 what="reading the checkpoint repo", retry=RetryPolicy(attempts=2, backoff_s=0))
    assert caught.value.code == "hub_unavailable" and closed in caught.value.message
    assert "2 attempts" in caught.value.message and TOKEN not in str(caught.value)


def test_an_answer_that_will_not_change_is_not_retried(hub):
    hub.fail_next(r"^/api/models/", 400, body={"error": "Invalid repo name"})
    with pytest.raises(ModelDownloadError) as caught:
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=FAST)
    assert caught.value.code == "hub_failed" and "Invalid repo name" in caught.value.message
    assert len(hub.requests_to(r"^/api/models/")) == 1


@pytest.mark.parametrize("family,stage", STAGES)
def test_401_is_hub_auth_in_every_stage_naming_the_field_never_the_token(hub, family, stage):
    message = "Invalid credentials in Authorization header"
    hub.fail_next(r"^/api/models/", 401, body={"error": message}, headers={"X-Error-Message": message})
    write = family is PublishError
    with pytest.raises(family) as caught:
        call_hub(info_of(REPO, hub), target=target(hub, family, field="some.field", token_field="hub.token",
                                                   write=write), what="checking", retry=FAST)
    error = caught.value
    assert (error.code, error.stage, error.field) == ("hub_auth", stage, "hub.token")
    assert message in error.message and "HF_TOKEN" in error.message
    assert ("write role" in error.message) is write
    assert isinstance(error, HubAuthError) is write  # publishing keeps its own class for each code
    assert TOKEN not in str(error) and TOKEN not in json.dumps(error.to_payload())
    assert len(hub.requests_to(r"^/api/models/")) == 1  # an auth error is not retried


def test_a_gated_repo_is_hub_auth_and_says_to_accept_its_license(hub):
    hub.fail_next(r"^/api/models/", 403, headers={"X-Error-Code": "GatedRepo"}, body={"error": "restricted"})
    with pytest.raises(ModelDownloadError) as caught:
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=FAST)
    assert caught.value.code == "hub_auth" and "accept the model's license" in caught.value.message


def test_a_missing_repo_or_revision_is_hub_not_found_naming_its_field(hub):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with pytest.raises(DownloadError) as repo:
        call_hub(lambda: api.dataset_info("tester/nothing"), retry=FAST, what="reading the dataset",
                 target=HubTarget("tester/nothing", family=DownloadError, field="dataset.hf_repo",
                                  endpoint=hub.endpoint, repo_type="dataset"))
    assert (repo.value.code, repo.value.field, repo.value.stage) == ("hub_not_found", "dataset.hf_repo", "dataset")
    assert "dataset repo tester/nothing not found (or private: give a token with access)" in repo.value.message
    with pytest.raises(ModelDownloadError) as revision:
        call_hub(lambda: api.model_info(REPO, revision="v9"), what="checking", retry=FAST,
                 target=target(hub, revision="v9", revision_field="config.revision"))
    assert (revision.value.code, revision.value.field) == ("hub_not_found", "config.revision")
    assert "no revision 'v9'" in revision.value.message


@pytest.mark.parametrize("status,code,kind", [(409, "hub_conflict", HubConflict), (402, "hub_quota", HubQuotaError),
                                              (413, "hub_quota", HubQuotaError)])
def test_conflict_and_quota_answers(hub, status, code, kind):
    hub.fail_next(r"^/api/models/", status, body={"error": "You have exceeded your storage quota"})
    with pytest.raises(kind) as caught:
        call_hub(info_of(REPO, hub), target=target(hub, PublishError, field="hub.repo_id", write=True),
                 what="committing", retry=FAST)
    assert caught.value.code == code and caught.value.field == "hub.repo_id" and str(status) in caught.value.message


def test_the_token_is_masked_even_when_the_hub_repeats_it(hub):
    hub.fail_next(r"^/api/models/", 400, body={"error": f"token {TOKEN} is malformed"})
    with pytest.raises(ModelDownloadError) as caught:
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=FAST)
    assert "is malformed" in caught.value.message and TOKEN not in json.dumps(caught.value.to_payload())


@pytest.mark.parametrize("make_cancel", [threading.Event, Cancel], ids=["threading.Event", "Cancel"])
def test_a_cancel_set_during_the_backoff_stops_within_a_second(hub, make_cancel):
    hub.fail_next(r"^/api/models/", 503, times=10)
    cancel = make_cancel()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(JobCancelled) as caught:
        call_hub(info_of(REPO, hub), target=target(hub, ResumeError), what="reading the checkpoint repo",
                 retry=RetryPolicy(attempts=4, backoff_s=30), cancel=cancel)
    assert time.monotonic() - started < 1.3  # 0.3 s to the cancel, not the 30 s backoff
    assert (caught.value.code, caught.value.stage) == ("cancelled", "resume")
    assert "reading the checkpoint repo" in caught.value.message
    assert len(hub.requests_to(r"^/api/models/")) == 1
    with pytest.raises(JobCancelled):  # once cancelled, no further request
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", cancel=cancel)
    assert len(hub.requests_to(r"^/api/models/")) == 1


def test_the_jobs_deadline_ends_a_backoff_too(hub):
    hub.fail_next(r"^/api/models/", 503, times=10)
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        call_hub(info_of(REPO, hub), target=target(hub), what="checking", retry=RetryPolicy(backoff_s=30),
                 cancel=Cancel(timeout_s=0.3))
    assert time.monotonic() - started < 1.3 and caught.value.stage == "model"


def test_offline_mode_is_its_own_code_and_makes_no_request(tmp_path):
    with running_hub_server(tmp_path, token=TOKEN, connect=False) as server:  # this process stays offline (conftest)
        with pytest.raises(ModelDownloadError) as caught:
            call_hub(info_of(REPO, server), target=target(server), what="checking", retry=FAST)
        assert server.requests == []
    assert caught.value.code == "hub_offline" and "HF_HUB_OFFLINE" in caught.value.message
    error = offline_error(target(server, PublishError, field="hub.repo_id"), "publishing tester/some-model")
    assert isinstance(error, PublishError) and error.code == "hub_offline" and error.field == "hub.repo_id"


def test_every_code_a_failure_ends_with_is_documented():
    documented = (Path(__file__).resolve().parent.parent / "docs" / "hub-and-s3.md").read_text()
    assert set(CODES) == {"hub_auth", "hub_not_found", "hub_conflict", "hub_quota", "hub_unavailable", "hub_offline",
                          "hub_failed"}
    assert all(f"`{code}`" in documented for code in CODES)


def test_the_endpoint_comes_from_HF_ENDPOINT():
    assert hub_endpoint({}) == "https://huggingface.co"
    assert hub_endpoint({"HF_ENDPOINT": "http://127.0.0.1:8080/ "}) == "http://127.0.0.1:8080"
    assert hub_endpoint({"HF_ENDPOINT": ""}) == "https://huggingface.co"


def test_repo_id_rules():
    for good in ("tester/my-lora", "Org_1/name.v2", "a/b", "x" * 96 + "/" + "y" * 96):
        assert is_repo_id(good), good
    for bad in ("", "name-only", "a/b/c", "/a", "a/", "../etc", "a/..b", "a/b--c", "a/b.git", "a/b.", "-a/b",
                "a/.b", "a b/c", "x" * 97 + "/y", "tester/lora\n"):
        assert not is_repo_id(bad), bad
    assert check_repo_id("tester/x", family=SpecError, field="hub.repo_id") == "tester/x"
    with pytest.raises(DownloadError) as caught:
        check_repo_id("../../etc", family=DownloadError, field="dataset.hf_repo", kind="dataset")
    assert caught.value.field == "dataset.hf_repo" and "is not a dataset repo id" in caught.value.message
    assert repo_path("./config//config.json", family=PublishError, field="extra_files") == "config/config.json"
    for bad in ("../x", "a/../../x", ".git/config", "", "./"):
        with pytest.raises(JobError) as caught:
            repo_path(bad, family=PublishError, field="extra_files")
        assert caught.value.field == "extra_files"
