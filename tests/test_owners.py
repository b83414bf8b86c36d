"""Jobs belong to the client that submitted them (server/owners.py): another client's job is not found by
status, subscribe, result or cancel, is not listed, and cannot be taken as an input (``{"job": id}``); the
owner survives a restart; ``--shared-jobs`` opens every job to every client. (Output files are no concern
between clients: under protocol 2 the server writes only into its own jobs folder.)"""

from __future__ import annotations

import json

from conftest import run_job
from server import owners
from server.client import Client

QUICK = {"prompt": "a warm piano tune", "duration": 0.5, "max_new_tokens": 4}


def _clients(endpoint):
    return (Client(endpoint, token=owners.new_token(), timeout_s=60),
            Client(endpoint, token=owners.new_token(), timeout_s=60))


def test_a_client_sees_only_its_own_jobs(make_server, tmp_path):
    srv = make_server()
    a, b = _clients(srv.endpoint)
    with a, b:
        done = run_job(a, "generate", QUICK)
        job = done["job"]
        assert done["owner"].startswith("token:") and a.token not in json.dumps(done)  # a hash, never the token
        for op, fields in (("status", {}), ("subscribe", {}), ("result", {"want": "bytes"}), ("cancel", {})):
            r = b.call(op, job=job, **fields)
            assert r.op == "error" and r.header["code"] == "not_found", (op, r.header)
            assert a.call(op, job=job, **fields).op != "error", op
        assert [j["job"] for j in a.call("jobs").header["jobs"]] == [job]
        assert b.call("jobs").header["jobs"] == []
        # a's finished result is an input for a, never for b (not even its existence is told)
        edit = {"prompt": "brighter", "duration": 0.5, "max_new_tokens": 4}
        r = b.call("submit", kind="edit", params=edit, inputs={"audio": {"job": job}})
        assert r.op == "error" and r.header["code"] == "not_found" and r.header["field"] == "inputs.audio.job", r.header
        assert run_job(a, "edit", edit, {"audio": {"job": job}})["state"] == "done"
        out = tmp_path / "a.wav"  # the owner fetches its bytes and writes them itself
        assert a.save_result(job, out)["audio_path"] == str(out) and out.stat().st_size > 44
        r = b.call("submit", kind="generate", params=QUICK)
        assert r.op == "accepted"
        assert b.call("cancel", job=r.job).op == "cancelling"


def test_the_owner_survives_a_restart_and_shared_jobs_opens_them(make_server, tiny_model, tmp_path):
    from server.app import ServerApp, ServerSettings, model_info

    srv = make_server()
    a, b = _clients(srv.endpoint)
    with a, b:
        job = run_job(a, "generate", QUICK)["job"]
    srv.app.stop()
    for shared in (False, True):
        app = ServerApp(tiny_model, model_info(tiny_model, "tiny"),
                        ServerSettings(port=0, data_dir=srv.data_dir, write_discovery=False, shared_jobs=shared))
        app.start()
        try:
            with Client(app.endpoint, token=a.token, timeout_s=60) as a2, \
                    Client(app.endpoint, token=b.token, timeout_s=60) as b2:
                assert a2.call("status", job=job).header["state"] == "done"
                r = b2.call("status", job=job)
                assert (r.op == "job") == shared, r.header
                assert [j["job"] for j in b2.call("jobs").header["jobs"]] == ([job] if shared else [])
                assert b2.call("hello").header["client"]["shared_jobs"] is shared
        finally:
            app.stop()


def test_clients_without_a_token(server):
    with Client(server, token=False, timeout_s=60) as raw, Client(server, token=False, timeout_s=60) as other:
        welcome = raw.call("hello").header["client"]
        assert welcome["owner"].startswith("conn:") and owners.TOKEN_RE.fullmatch(welcome["token"])
        r = raw.call("submit", kind="generate", params=QUICK)
        assert raw.call("status", job=r.job).op == "job"  # the connection's own job
        assert other.call("status", job=r.job).header["code"] == "not_found"
        bad = raw.call("status", job=r.job, token="short")
        assert bad.header["code"] == "bad_request" and bad.header["field"] == "token"
        with Client(server, token=welcome["token"]) as adopted:  # the issued token is an identity of its own
            assert adopted.call("hello").header["client"] == {"owner": owners.owner_of(b"", {"token": welcome["token"]}),
                                                               "token": None, "shared_jobs": False}


def test_the_user_token_is_kept_in_the_config_dir(server, tmp_path):
    path = owners.token_path()
    assert not path.exists()
    with Client(server) as c1:
        job = c1.call("submit", kind="generate", params=QUICK).job
    assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
    with Client(server) as c2:  # another process of the same user (the CLI, REAPER's Jobs list) sees it
        assert c2.token == c1.token and c2.call("status", job=job).op == "job"
