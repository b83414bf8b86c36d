// End to end: the device JS (as Max's [js] runs it) with the LOM stub, over real UDP/OSC, against the
// real OSC bridge and job server (tiny preset). Started by tests/test_max_device.py, which passes
// M2U_BRIDGE_PORT (the bridge's UDP port), M2U_CLIP (a WAV inside the server's allowed roots) and
// M2U_LOM_NAMES.
"use strict";

const test = require("node:test");
const { after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const path = require("path");
const harness = require("./harness");

const requiredEnv = (name) => harness.requiredEnv(name, "tests/test_max_device.py");
const BRIDGE_PORT = Number(requiredEnv("M2U_BRIDGE_PORT"));
const CLIP = requiredEnv("M2U_CLIP");
const SET_DIR = requiredEnv("M2U_SET_DIR");
const RESULTS_DIR = path.join(SET_DIR, "Samples", "M2UGen");
const JOB_TIMEOUT_MS = 180000;

// every device is closed at the end, also after a failed test (its sockets would keep node running)
const devices = [];
after(async () => {
    for (const d of devices) await d.close();
});

function startDevice(worldOptions, previewOn) {
    return harness.startUdpDevice(devices, BRIDGE_PORT, SET_DIR, worldOptions, previewOn);
}

function calls(world, name) {
    return world.log.filter((e) => e.op === "call" && e.name === name);
}

function finished(dev) {
    return () => /Placed on track|Answer ready|Error |Live could not|cannot import|Preview take/.test(dev.lastStatus());
}

test("hello: the bridge answers /m2u/welcome with the server up and the tiny model", async () => {
    const { dev, udp } = await startDevice({});
    const welcome = udp.received.find((m) => m.address === "/m2u/welcome");
    assert.equal(welcome.args[1], "up");
    assert.equal(welcome.args[4], 1); // tiny
    assert.match(dev.lastStatus(), /^Connected: .*tiny test model/);
    await dev.close();
});

test("generate in the arrangement: preview, Accept, then the clip (a file in the Set's folder) at the loop start", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 1, tracks: 3, view: "Arranger", loop: 1, loopStart: 8, loopLength: 4, tempo: 120 }, true);
    assert.ok(udp.received.find((m) => m.address === "/m2u/welcome").args[7], "the bridge names its capture folder");
    dev.send("mode", "generate");
    dev.send("sample_rate", 44100); // what [dspstate~] reports: the result comes at the Set's rate
    dev.send("seed", 5);
    dev.send("prompt", "short", "lofi", "piano");
    dev.send("go");
    await udp.waitFor(finished(dev), JOB_TIMEOUT_MS, "the generate job to finish");
    assert.match(dev.lastStatus(), /^Preview take 1\/1 \(seed 5\)/);
    const done = udp.received.find((m) => m.address === "/m2u/done");
    const resultPath = done.args[1];
    assert.equal(path.dirname(resultPath), RESULTS_DIR, "written by the bridge next to the Set, not in the jobs folder");
    assert.ok(fs.existsSync(resultPath), `result file ${resultPath} exists`);
    assert.ok(Math.abs(done.args[2] - 2.0) < 0.05, `duration ${done.args[2]} is the loop length (4 beats at 120 bpm)`);
    assert.equal(done.args[3], 44100);
    assert.deepEqual(dev.outlets[3].filter((m) => m[0] === "preview" && m[1] === "open").pop(), ["preview", "open", resultPath]);
    assert.equal(calls(world, "create_audio_track").length, 0, "nothing placed before Accept");
    dev.send("accept");
    await udp.waitFor(() => /Placed on track/.test(dev.lastStatus()), 5000, "the placement");
    assert.match(dev.lastStatus(), /Placed on track 3 at beat 8/);
    assert.deepEqual(calls(world, "create_audio_track").map((c) => c.args), [[2]]);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => [c.path, c.args]), [["live_set tracks 2", [resultPath, 8]]]);
    assert.ok(udp.received.some((m) => m.address === "/m2u/progress"), "progress events arrived");
    console.log("M2U_JOB generate " + done.args[0]);
    await dev.close();
});

test("edit of the selected session clip: result in the selected scene's slot of the new track", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, view: "Session", selectedScene: 1 });
    world.selectAudioClip({ file_path: CLIP, warping: 0, start_marker: 0.5, end_marker: 1.5 }, { track: 0, slot: 0 });
    dev.send("mode", "edit");
    dev.send("duration", 1);
    dev.send("prompt", "add", "drums");
    dev.send("go");
    await udp.waitFor(finished(dev), JOB_TIMEOUT_MS, "the edit job to finish");
    assert.match(dev.lastStatus(), /Placed on track 2 \(session\)/);
    const done = udp.received.find((m) => m.address === "/m2u/done");
    assert.ok(fs.existsSync(done.args[1]));
    assert.equal(path.dirname(done.args[1]), RESULTS_DIR);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => [c.path, c.args]), [["live_set tracks 1 clip_slots 1", [done.args[1]]]]);
    console.log("M2U_JOB edit " + done.args[0]);
    await dev.close();
});

test("a bridge error (a file that is no audio) lands in the status line, nothing is created", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: "/etc/hostname", warping: 0, start_marker: 0, end_marker: 1 }, { track: 0, slot: 0 });
    dev.send("mode", "ask");
    dev.send("prompt", "what is this");
    dev.send("go");
    await udp.waitFor(finished(dev), 30000, "the error");
    assert.match(dev.lastStatus(), /^Error (bad_audio|bad_request): /);
    assert.equal(calls(world, "create_audio_track").length, 0);
    await dev.close();
});

test("ask about the selected clip: the text answer reaches the answer box, nothing is placed", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: CLIP, warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("mode", "ask");
    dev.send("prompt", "what", "instruments", "play", "here?");
    dev.send("go");
    await udp.waitFor(finished(dev), JOB_TIMEOUT_MS, "the ask job to finish");
    assert.match(dev.lastStatus(), /^Answer ready/);
    const done = udp.received.find((m) => m.address === "/m2u/done");
    assert.equal(done.args[1], ""); // ask: no audio
    const chunks = udp.received.filter((m) => m.address === "/m2u/text").sort((a, b) => a.args[1] - b.args[1]);
    const text = chunks.map((m) => m.args[3]).join("");
    const answers = dev.ui("answer");
    assert.equal(String(answers[answers.length - 1][0]), text);
    assert.equal(calls(world, "create_audio_track").length, 0);
    await dev.close();
});

test("the job list names the jobs of this run; Re-insert places an earlier result again", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, view: "Arranger", loop: 1, loopStart: 4 });
    dev.send("refresh_jobs");
    await udp.waitFor(() => udp.received.some((m) => m.address === "/m2u/jobs"), 10000, "/m2u/jobs");
    const jobs = udp.received.filter((m) => m.address === "/m2u/job");
    assert.ok(jobs.length >= 3, `jobs listed: ${jobs.length}`);
    const index = jobs.findIndex((m) => m.args[3] === "generate" && m.args[4] === "done");
    assert.ok(index >= 0, "the generate job is listed as done");
    dev.send("pick_job", jobs[index].args[0]);
    dev.send("reinsert");
    await udp.waitFor(finished(dev), 30000, "the re-insert");
    assert.match(dev.lastStatus(), /Placed on track 2 at beat 4/);
    const clip = calls(world, "create_audio_clip")[0].args[0];
    assert.equal(path.dirname(clip), RESULTS_DIR);
    await dev.close();
});

test("transcribe the selected clip: the notes come back through the bridge as a new MIDI clip", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, view: "Session", selectedScene: 0, tempo: 120 });
    world.selectAudioClip({ file_path: CLIP, warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("transcribe");
    await udp.waitFor(() => /Placed \d+ melody notes|Error |Live could not|did not all arrive/.test(dev.lastStatus()),
        JOB_TIMEOUT_MS, "the transcription");
    assert.match(dev.lastStatus(), /^Placed \d+ melody notes.* on MIDI tracks? 2/);
    const done = udp.received.find((m) => m.address === "/m2u/done");
    assert.equal(path.dirname(done.args[1]), RESULTS_DIR);
    assert.ok(done.args[1].endsWith(".mid") && fs.existsSync(done.args[1]), "the .mid is kept next to the Set");
    assert.deepEqual(calls(world, "create_midi_track")[0].args, [1]);   // the melody; the chords (if any) after it
    const clip = world.song.values.tracks[1].values.clip_slots[0].values.clip;
    assert.ok(clip.values.notes.some((n) => n.pitch === 69), "the 440 Hz clip is an A4");
    console.log("M2U_JOB transcribe " + done.args[0]);
    await dev.close();
});

// The WAV header's channel count (bytes 22-23 of the fmt chunk at the start).
function wavChannels(file) {
    const h = fs.readFileSync(file).subarray(0, 64);
    const fmt = h.indexOf("fmt ");
    return h.readUInt16LE(fmt + 10);
}

test("edit of a clip warped 120 -> 100 BPM: file seconds sent, a stereo result warped over the clip's 4 beats", async () => {
    // the 2 s file is a 120 BPM loop: its warp markers say 4 beats = 2 s; the Set plays at 100 BPM
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, view: "Arranger", tempo: 100 });
    const source = world.selectAudioClip({
        file_path: CLIP, warping: 1, start_marker: 0, end_marker: 4, start_time: 8,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 4, sample_time: 2 }] }),
    }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("prompt", "add", "swing");
    dev.send("go");
    const sent = dev.lastSubmit().options;
    assert.deepEqual([sent.start, sent.end, sent.channels], [0, 2, 2]);
    await udp.waitFor(finished(dev), JOB_TIMEOUT_MS, "the warped edit");
    assert.match(dev.lastStatus(), /Placed on track 2 at beat 8.*source clip muted/);
    const done = udp.received.find((m) => m.address === "/m2u/done");
    assert.equal(wavChannels(done.args[1]), 2, "a stereo result");
    const clip = world.song.values.tracks[1].values.arrangement_clips[0];
    assert.equal(clip.values.warping, 1);
    const span = Number(world.getValue(clip, "end_time")[0]) - Number(world.getValue(clip, "start_time")[0]);
    assert.ok(Math.abs(span - 4) < 1e-6, `the result spans ${span} beats of the Set (the source's 4), not 3.33`);
    assert.equal(source.values.muted, 1);
    assert.deepEqual(dev.dropped, []);
    console.log("M2U_JOB warped " + done.args[0]);
    await dev.close();
});

test("a 600-note clip melody reaches the job through an upload (no datagram over 9,216 bytes)", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, view: "Session", tempo: 120 });
    const notes = [];
    for (let i = 0; i < 600; i++) notes.push({ pitch: 48 + (i % 24), start_time: i * 0.25, duration: 0.2, velocity: 90, mute: 0 });
    world.selectMidiClip(notes, { name: "long line", start_marker: 0, end_marker: 150 });
    dev.send("melody_clip", 1);
    dev.send("mode", "generate");
    dev.send("duration", 2);
    dev.send("prompt", "strings");
    dev.send("go");
    await udp.waitFor(() => udp.received.some((m) => m.address === "/m2u/accepted" || m.address === "/m2u/error"),
        30000, "the request's answer");
    assert.deepEqual(dev.dropped, [], "every datagram fits macOS's limit");
    assert.ok(dev.osc().filter((m) => m[0] === "/m2u/upload").length >= 3);
    const accepted = udp.received.find((m) => m.address === "/m2u/accepted");
    assert.ok(accepted, "accepted: " + JSON.stringify(udp.received.filter((m) => m.address === "/m2u/error").map((m) => m.args)));
    assert.equal(accepted.args[2], dev.lastSubmit().options.tag, "the bridge names the request");
    console.log("M2U_JOB melody " + accepted.args[0]);
    dev.send("cancel");
    await dev.close();
});

test("a Learn runs in the background while an Ask is sent, answered and shown", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: CLIP, warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("learn_steps", 20000);   // long enough to be running all through the ask
    dev.send("learn", "e2e_style");
    await udp.waitFor(() => dev.sandbox.state.slots.bg && dev.sandbox.state.slots.bg.id, 30000, "the learn's job");
    const learnJob = dev.sandbox.state.slots.bg.id;
    dev.send("mode", "ask");
    dev.send("prompt", "what", "is", "this?");
    dev.send("go");
    assert.equal(dev.lastSubmit().kind, "ask", "Ask is not locked by the running Learn");
    await udp.waitFor(finished(dev), JOB_TIMEOUT_MS, "the ask");
    assert.match(dev.lastStatus(), /^Answer ready/);
    assert.ok(dev.sandbox.state.slots.bg && dev.sandbox.state.slots.bg.id === learnJob, "the learn was still running");
    assert.match(String(dev.ui("learn_status").pop()[0]), /e2e_style/);
    dev.send("learn_cancel");
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", learnJob, dev.sandbox.state.port]);
    console.log("M2U_JOB learn " + learnJob);
    await dev.close();
});
