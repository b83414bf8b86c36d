// Issue 22 (Live part): the device against the honest LOM stub (warping, Arrangement positions, Live
// versions) and the 9,216-byte datagram limit of macOS. One block per numbered item of the issue.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { World } = require("./lom_stub");
const { Device, MAX_DATAGRAM, ready, calls, settle, writeWav } = require("./harness");
const osc = require("./osc");

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "m2u-live-"));

// A real WAV the stub reads the length of.
const wav = (name, seconds, sampleRate) => writeWav(TMP, name, seconds, sampleRate);

const RESULT = wav("result.wav", 2.0);

function submits(dev) {
    return dev.osc().filter((m) => m[0] === "/m2u/submit");
}

// The tag of the last submit (the device names each request; the bridge echoes it in /m2u/accepted).
function lastTag(dev) {
    return dev.lastSubmit().options.tag;
}

async function finish(dev, job, donePath, seconds) {
    dev.receive("/m2u/done", [job, donePath, seconds || 2.0, 32000]);
    await settle(dev);
}

function notes(n) {
    const out = [];
    for (let i = 0; i < n; i++) out.push({ pitch: 48 + (i % 36), start_time: i * 0.25, duration: 0.2, velocity: 100, mute: 0 });
    return out;
}

// ---- item 1: a running Learn does not lock Ask / Edit / Generate / Transcribe ---------------------

test("1: Ask runs and completes while a Learn runs; the Learn has its own status line", async () => {
    const { world, dev } = ready();
    dev.send("learn_file", "/Users/me/loops/a.wav");
    dev.send("learn", "mine");
    dev.receive("/m2u/accepted", ["ft1", 0, lastTag(dev)]);
    dev.receive("/m2u/progress", ["ft1", 0.1, "training"]);
    assert.match(dev.ui("learn_status").pop()[0], /mine.*training 10%/);
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("mode", "ask");
    dev.send("prompt", "what is this");
    dev.send("go");
    assert.equal(dev.lastSubmit().kind, "ask", "the ask is sent while the learn runs");
    dev.receive("/m2u/accepted", ["a1", 1, lastTag(dev)]);
    dev.receive("/m2u/progress", ["ft1", 0.2, "training"]);   // learn progress never overwrites the ask's line
    assert.doesNotMatch(dev.lastStatus(), /training/);
    dev.receive("/m2u/text", ["a1", 0, 1, "a piano"]);
    dev.receive("/m2u/done", ["a1", "", 0, 0]);
    assert.match(dev.lastStatus(), /Answer ready/);
    assert.equal(String(dev.ui("answer").pop()[0]), "a piano");
    assert.match(dev.ui("learn_status").pop()[0], /training 20%/, "the learn is still followed");
    dev.send("learn", "other");
    assert.match(dev.ui("learn_status").pop()[0], /already learning mine/i);
    dev.receive("/m2u/done", ["ft1", "", 0, 0]);
    assert.match(dev.ui("learn_status").pop()[0], /Adapter mine learnt/);
    dev.send("learn_cancel");
    assert.match(dev.ui("learn_status").pop()[0], /Nothing to stop/);
    await dev.close();
});

test("1: Stop learn cancels the learn only; Cancel cancels the interactive job only", async () => {
    const { dev } = ready();
    dev.send("learn_file", "/Users/me/loops/a.wav");
    dev.send("learn", "mine");
    dev.receive("/m2u/accepted", ["ft2", 0, lastTag(dev)]);
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["g2", 0, lastTag(dev)]);
    dev.send("cancel");
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "g2", 9101]);
    dev.receive("/m2u/progress", ["ft2", 0.5, "training"]);
    assert.match(dev.ui("learn_status").pop()[0], /training 50%/);
    dev.send("learn_cancel");
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "ft2", 9101]);
    assert.equal(dev.jobTasks().length, 0, "no watchdog or poll left running");
    await dev.close();
});

// ---- item 3: nothing depends on one datagram's size ------------------------------------------------

test("3: a 600-note clip melody goes as an upload in pieces under 9,216 bytes, then the submit names it", async () => {
    const { world, dev } = ready({ tempo: 120 });
    world.selectMidiClip(notes(600), { name: "long", start_marker: 0, end_marker: 150 });
    dev.send("melody_clip", 1);
    dev.send("mode", "generate");
    dev.send("prompt", "strings");
    dev.send("go");
    assert.deepEqual(dev.dropped, [], "no datagram over the limit");
    const pieces = dev.osc().filter((m) => m[0] === "/m2u/upload");
    assert.ok(pieces.length >= 3, `${pieces.length} pieces`);
    for (const p of pieces) assert.ok(osc.encode(p[0], p.slice(1)).length <= MAX_DATAGRAM);
    assert.equal(submits(dev).length, 0, "the submit waits for /m2u/uploaded");
    const id = pieces[0][1];
    const text = pieces.sort((a, b) => a[2] - b[2]).map((p) => p[4]).join("");
    assert.equal(JSON.parse(text).midi_notes.length, 600);
    dev.receive("/m2u/uploaded", [id, text.length]);
    const o = dev.lastSubmit().options;
    assert.equal(o.upload, id);
    assert.equal(o.midi_notes, undefined);
    await dev.close();
});

test("3: every message stays under the limit: long learn lists go as uploads, an oversize prompt is refused", async () => {
    const { dev } = ready();
    for (let i = 0; i < 60; i++) dev.send("learn_file", `/Users/me/Music/Samples/Very Long Folder Name For Loops/take-${i}-${"x".repeat(120)}.wav`);
    dev.send("learn", "big");
    assert.deepEqual(dev.dropped, []);
    const pieces = dev.osc().filter((m) => m[0] === "/m2u/upload");
    assert.ok(pieces.length >= 2);
    dev.receive("/m2u/uploaded", [pieces[0][1], 1]);
    assert.equal(dev.lastSubmit().kind, "finetune");
    assert.equal(dev.lastSubmit().options.upload, pieces[0][1]);
    dev.send("prompt", "y".repeat(12000));
    dev.send("go");
    assert.deepEqual(dev.dropped, []);
    assert.match(dev.lastStatus(), /prompt is too long/i);
    await dev.close();
});

// ---- item 9: Edit mutes the source clip (undoably) --------------------------------------------------

test("9: an edit result replaces the source clip in playback: the source is muted in the same undo step", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger" });
    const source = world.selectAudioClip({ file_path: "/Users/me/x.wav", warping: 0, start_marker: 0, end_marker: 2, start_time: 8 }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("prompt", "brighter");
    dev.send("go");
    dev.receive("/m2u/accepted", ["e1", 0, lastTag(dev)]);
    await finish(dev, "e1", RESULT);
    assert.match(dev.lastStatus(), /Placed/);
    assert.equal(source.values.muted, 1, "the source clip no longer plays under the result");
    assert.equal(world.undo.steps.length, 1, "one undo step");
    assert.equal(world.undo.depth, 0, "the undo step is closed");
    const firstChange = world.log.findIndex((e) => e.name === "create_audio_track");
    assert.ok(world.undo.steps[0] <= firstChange, "the track, the clip and the mute are in that step");
    assert.match(dev.lastStatus(), /source clip muted/);
    await dev.close();
});

// ---- item 10: warped clips ---------------------------------------------------------------------------

test("10: an 8-beat clip warped 120 -> 100 BPM: 4 file seconds sent, the result spans 8 beats", async () => {
    // the file is at 120 BPM: its warp markers say 16 beats = 8 s; the Set plays at 100 BPM
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", tempo: 100 });
    world.selectAudioClip({
        file_path: "/Users/me/loop120.wav", warping: 1, start_marker: 0, end_marker: 8, start_time: 16,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 16, sample_time: 8 }] }),
    }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("prompt", "more swing");
    dev.send("go");
    const o = dev.lastSubmit().options;
    assert.deepEqual([o.start, o.end], [0, 4]);
    dev.receive("/m2u/accepted", ["w1", 0, lastTag(dev)]);
    const result = wav("warped-result.wav", 4.0);
    await finish(dev, "w1", result, 4.0);
    const clip = world.song.values.tracks[1].values.arrangement_clips[0];
    assert.equal(clip.values.start_time, 16);
    assert.equal(clip.values.warping, 1, "placed warped, like its source");
    const span = JSON.parse(String(world.getValue(clip, "end_time")[0])) - 16;
    assert.ok(Math.abs(span - 8) < 1e-6, `the result spans ${span} beats, not 8`);
    await dev.close();
});

test("10: a warped clip with a warp marker inside the region keeps its timing in the result", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", tempo: 100 });
    world.selectAudioClip({
        file_path: "/Users/me/loop.wav", warping: 1, start_marker: 4, end_marker: 12, start_time: 0,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 8, sample_time: 3 },
            { beat_time: 16, sample_time: 8 }] }),
    }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("prompt", "x");
    dev.send("go");
    const o = dev.lastSubmit().options;
    assert.deepEqual([o.start, o.end], [1.5, 5.5]);
    dev.receive("/m2u/accepted", ["w2", 0, lastTag(dev)]);
    await finish(dev, "w2", wav("warped-result2.wav", 4.0), 4.0);
    const clip = world.song.values.tracks[1].values.arrangement_clips[0];
    const markers = JSON.parse(String(world.getValue(clip, "warp_markers")[0])).warp_markers;
    assert.deepEqual(markers.map((m) => [m.beat_time, m.sample_time]), [[0, 0], [4, 1.5], [8, 4]]);
    await dev.close();
});

// ---- item 11: stereo results --------------------------------------------------------------------------

test("11: generate and edit ask for 2 channels (ask and transcribe make no audio)", () => {
    const { world, dev } = ready();
    dev.send("prompt", "x");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.channels, 2);
    dev.send("cancel");
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("mode", "ask");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.channels, undefined);
    return dev.close();
});

// ---- item 13: Transcribe and Clip melody in the Arrangement -----------------------------------------

test("13: transcribe an Arrangement clip: melody and chords on their own MIDI tracks at the clip's position", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", tempo: 120 });
    world.selectAudioClip({ file_path: "/Users/me/song.wav", warping: 0, start_marker: 0, end_marker: 4, start_time: 32 }, { track: 0 });
    dev.send("transcribe");
    dev.receive("/m2u/accepted", ["t1", 0, lastTag(dev)]);
    const n = JSON.stringify([[0, 0.5, 60, 100, 0], [0.5, 1, 62, 100, 0], [0, 2, 48, 80, 1], [0, 2, 52, 80, 1]]);
    dev.receive("/m2u/notes", ["t1", 0, 1, n]);
    dev.receive("/m2u/done", ["t1", "/Users/me/song.mid", 4.0, 0]);
    await settle(dev);
    const tracks = world.song.values.tracks;
    const melody = tracks[1], chords = tracks[2];
    assert.match(melody.values.name, /melody/);
    assert.match(chords.values.name, /chords/);
    assert.equal(melody.values.clip_slots.filter((s) => s.values.has_clip).length, 0, "nothing in a Session slot");
    const m = melody.values.arrangement_clips[0], c = chords.values.arrangement_clips[0];
    assert.equal(m.values.start_time, 32);
    assert.equal(c.values.start_time, 32);
    assert.deepEqual(m.values.notes.map((x) => x.pitch), [60, 62]);
    assert.deepEqual(c.values.notes.map((x) => x.pitch), [48, 52]);
    assert.match(dev.lastStatus(), /melody.*chords/);
    await dev.close();
});

test("13: Live before 12.1.10 (no create_midi_clip for devices): the clip reaches the Arrangement by duplication", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", tempo: 120, version: [11, 3, 43] });
    world.selectAudioClip({ file_path: "/Users/me/song.wav", warping: 0, start_marker: 0, end_marker: 4, start_time: 12 }, { track: 0 });
    dev.send("transcribe");
    dev.receive("/m2u/accepted", ["t2", 0, lastTag(dev)]);
    dev.receive("/m2u/notes", ["t2", 0, 1, JSON.stringify([[0, 0.5, 60, 100, 0]])]);
    dev.receive("/m2u/done", ["t2", "/Users/me/song.mid", 4.0, 0]);
    await settle(dev);
    const melody = world.song.values.tracks[1];
    assert.equal(melody.values.arrangement_clips[0].values.start_time, 12);
    assert.equal(melody.values.clip_slots.filter((s) => s.values.has_clip).length, 0, "the helper slot clip is gone");
    await dev.close();
});

test("13: clip melody: notes re-read at submit, the result at the melody clip's Arrangement position", async () => {
    const { world, dev } = ready({ deviceTrack: 1, view: "Arranger", tempo: 120, loop: 1, loopStart: 16 });
    const clip = world.selectArrangementMidiClip(notes(2), 0, 24, { name: "hook", end_marker: 4 });
    dev.send("melody_clip", 1);
    clip.values.notes.push({ pitch: 72, start_time: 3, duration: 0.5, velocity: 90, mute: 0 });  // edited after the toggle
    dev.send("mode", "generate");
    dev.send("prompt", "strings");
    dev.send("go");
    const pieces = dev.osc().filter((m) => m[0] === "/m2u/upload");
    dev.receive("/m2u/uploaded", [pieces[0][1], 1]);
    const sent = JSON.parse(pieces.map((p) => p[4]).join("")).midi_notes;
    assert.equal(sent.length, 3, "the note added after the toggle is sent");
    dev.receive("/m2u/accepted", ["m1", 0, lastTag(dev)]);
    await finish(dev, "m1", RESULT);
    assert.deepEqual(calls(world, "create_audio_clip")[0].args, [RESULT, 24], "at the melody clip, not the loop start (16)");
    await dev.close();
});

test("13: a saved Clip melody toggle before live.thisdevice does not touch the LOM; the notes are read at Go", async () => {
    const world = new World({ tempo: 120 });
    const dev = new Device(world);
    dev.send("melody_clip", 1);             // restored from the Set before live.thisdevice
    assert.deepEqual(dev.liveErrors, [], "no LiveAPI use before live.thisdevice");
    dev.send("preview", 0);
    dev.send("init");
    world.selectMidiClip(notes(3), { name: "hook" });
    dev.send("prompt", "x");
    dev.send("go");
    const pieces = dev.osc().filter((m) => m[0] === "/m2u/upload");
    assert.ok(pieces.length >= 1, "the melody of the clip selected at Go is sent");
    await dev.close();
});

// ---- item 14: late answers, hello retries, takes --------------------------------------------------------

test("14: a late /m2u/accepted after the timeout is adopted when the device is free", async () => {
    const { world, dev } = ready({ view: "Session" });
    dev.send("prompt", "x");
    dev.send("go");
    const tag = lastTag(dev);
    dev.fireTasks();                          // the 5 s accept timeout
    assert.match(dev.lastStatus(), /No answer from the bridge/);
    dev.receive("/m2u/accepted", ["late1", 0, tag]);
    assert.match(dev.lastStatus(), /answered late.*late1/);
    await finish(dev, "late1", RESULT);
    assert.equal(calls(world, "create_audio_clip").length, 1, "the adopted job's result is placed");
    await dev.close();
});

test("14: a late /m2u/accepted while another job runs is cancelled, never dropped", () => {
    const { dev } = ready();
    dev.send("prompt", "x");
    dev.send("go");
    const tag = lastTag(dev);
    dev.fireTasks();
    dev.send("go");
    dev.receive("/m2u/accepted", ["new1", 0, lastTag(dev)]);
    dev.receive("/m2u/accepted", ["old1", 0, tag]);
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "old1", 9101]);
    assert.equal(dev.sandbox.state.slots.fg.id, "new1");
    return dev.close();
});

test("14: an orphaned Learn does not block a later one, and is cancelled when it shows up", () => {
    const { dev } = ready();
    dev.send("learn_file", "/Users/me/a.wav");
    dev.send("learn", "one");
    const tag = lastTag(dev);
    dev.fireTasks();
    dev.send("learn", "two");
    assert.equal(dev.lastSubmit().options.adapter_name, "two", "the second learn is sent");
    dev.receive("/m2u/accepted", ["ftold", 0, tag]);
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "ftold", 9101]);
    return dev.close();
});

test("14: hello is repeated until the bridge welcomes the device; then Rec works", () => {
    const { dev } = ready();
    const hellos = () => dev.osc().filter((m) => m[0] === "/m2u/hello").length;
    assert.equal(hellos(), 1);
    dev.fireTasks();
    dev.fireTasks();
    assert.equal(hellos(), 3, "the bridge started after Live: the device keeps saying hello");
    dev.receive("/m2u/welcome", ["0.1", "up", "0.1", "tiny", 1, 32000, 9101, "/tmp/m2ugen-captures"]);
    dev.fireTasks();
    assert.equal(hellos(), 3, "no more hellos after the welcome");
    dev.send("rec", 1);
    assert.match(dev.lastStatus(), /Recording/);
    dev.send("rec", 0);
    return dev.close();
});

test("14: Arrangement takes are alternatives at the same position on their own tracks, takes 2+ muted", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", loop: 1, loopStart: 8, tempo: 120 });
    dev.send("takes", 3);
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["k1", 0, lastTag(dev)]);
    for (let i = 0; i < 3; i++) dev.receive("/m2u/take", ["k1", i, 3, RESULT, 10 + i]);
    await finish(dev, "k1", RESULT);
    const clips = calls(world, "create_audio_clip");
    assert.deepEqual(clips.map((c) => [c.path, c.args[1]]), [["live_set tracks 1", 8], ["live_set tracks 2", 8], ["live_set tracks 3", 8]]);
    const muted = [1, 2, 3].map((t) => world.song.values.tracks[t].values.arrangement_clips[0].values.muted);
    assert.deepEqual(muted, [0, 1, 1]);
    await dev.close();
});

// ---- item 18: Live 11.3.25-11.3.41 have no Song.file_path; state.placed is bounded ----------------------

test("18: Live 11.3.30 has no Song.file_path: the device does not ask for it and says where results go", () => {
    const { dev } = ready({ version: [11, 3, 30], setPath: "/Users/me/Song.als" });
    dev.send("prompt", "x");
    dev.send("go");
    assert.deepEqual(dev.liveErrors, []);
    assert.equal(dev.lastSubmit().options.results_dir, "user");
    assert.match(dev.lastStatus(), /bridge's results folder/);
    return dev.close();
});

test("18: the list of placed results stays bounded", async () => {
    const { dev } = ready({ view: "Session", scenes: 2 });
    for (let i = 0; i < 70; i++) {
        dev.send("prompt", "x");
        dev.send("go");
        dev.receive("/m2u/accepted", ["p" + i, 0, lastTag(dev)]);
        await finish(dev, "p" + i, RESULT);
    }
    assert.ok(dev.sandbox.state.placed.length <= 32, `${dev.sandbox.state.placed.length} kept`);
    await dev.close();
});
