"""JobView: the event -> job-state table the bridge (and later every Python client) folds events with."""

import pytest

from server.jobview import TRANSITIONS, JobView


def fold(*events, job="j1"):
    view = JobView(job)
    used = [view.apply({"job": job, **e}) for e in events]
    return view, used


def test_a_generate_from_accepted_to_done():
    view, used = fold({"op": "accepted", "queue_position": 2}, {"op": "queued", "queue_position": 1},
                      {"op": "progress", "stage": "thinking", "fraction": 0.2},
                      {"op": "text", "text": "It is", "delta": "It is"},
                      {"op": "progress", "stage": "generating", "fraction": 0.6},
                      {"op": "done", "state": "done", "text": "It is in A minor.", "audio_path": "/r.wav",
                       "duration": 4.0, "sample_rate": 32000, "seed": 7,
                       "takes": [{"audio_path": "/r.wav", "seed": 7}, {"audio_path": "/r2.wav", "seed": 8}],
                       "analysis": {"summary": "92 BPM"}})
    assert all(used)
    assert (view.state, view.fraction, view.stage, view.queue_position) == ("done", 1.0, "generating", 0)
    assert (view.text, view.audio_path, view.duration, view.sample_rate, view.seed) == (
        "It is in A minor.", "/r.wav", 4.0, 32000, 7)
    assert [t["seed"] for t in view.takes] == [7, 8] and view.analysis == {"summary": "92 BPM"}
    assert view.final


@pytest.mark.parametrize("events, state", [
    ([{"op": "accepted"}], "queued"),
    ([{"op": "accepted"}, {"op": "progress", "fraction": 0.1}], "running"),
    ([{"op": "accepted"}, {"op": "text", "text": "a"}], "running"),
    ([{"op": "accepted"}, {"op": "error", "code": "job_failed", "message": "boom"}], "failed"),
    ([{"op": "accepted"}, {"op": "cancelling", "state": "running"}], "queued"),
    ([{"op": "accepted"}, {"op": "cancelled"}], "cancelled"),
    # final states are kept: late events of a cancelled job, or a stale record, change nothing
    ([{"op": "cancelled"}, {"op": "progress", "fraction": 0.9}, {"op": "done"}], "cancelled"),
    ([{"op": "done"}, {"op": "job", "state": "running"}], "done"),
    # records carry their own state
    ([{"op": "job", "state": "running", "fraction": 0.4}], "running"),
    ([{"op": "subscribed", "state": "failed", "error": {"code": "interrupted", "message": "stopped"}}], "failed"),
    ([{"op": "result", "state": "done", "audio_path": "/x.wav"}], "done"),
])
def test_transition_table(events, state):
    view, _ = fold(*events)
    assert view.state == state


def test_errors_fraction_and_other_jobs():
    view, _ = fold({"op": "progress", "fraction": 0.5}, {"op": "progress", "fraction": 0.3})
    assert view.fraction == 0.5  # overall progress never goes back
    view, _ = fold({"op": "error", "code": "bad_audio", "message": "empty"})
    assert view.error == {"code": "bad_audio", "message": "empty"}
    view = JobView("j1")
    assert not view.apply({"op": "done", "job": "j2"})  # another job's event
    assert not view.apply({"job": "j1", "op": "pong"})  # not a job event
    assert view.state == "queued"
    assert set(TRANSITIONS) == {"accepted", "queued", "progress", "text", "done", "error", "cancelled", "cancelling"}
