// Issue 26 (Live part): Stems on the device -- the selected clip's sample as a `stems` job, each stem on
// its own new audio track next to its source, playing in time with it -- and the stem options of Edit.
// Against the LOM stub (tests/max/lom_stub.js: warping, clip markers as the LOM documents them, Live
// versions, undo steps).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { ready, calls, settle, writeWav } = require("./harness");

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "m2u-stems-"));
const STEMS4 = ["drums", "bass", "other", "vocals"];
const STEMS6 = STEMS4.concat(["guitar", "piano"]);

// A real WAV the stub reads the length of (stems: named as the bridge names them).
const wav = (name, seconds, sampleRate) => writeWav(TMP, name, seconds, sampleRate);

function stemFiles(job, seconds, names) {
    return (names || STEMS4).map((s) => wav(`M2UGen-${s}-${job}.wav`, seconds));
}

// The bridge's answer to a stems job: one /m2u/take per stem, then /m2u/done naming the first.
async function finishStems(dev, job, files, seconds) {
    files.forEach((f, i) => dev.receive("/m2u/take", [job, i, files.length, f, -1]));
    dev.receive("/m2u/done", [job, files[0] || "", seconds, 32000]);
    await settle(dev);
}

function accept(dev, job) {
    dev.receive("/m2u/accepted", [job, 0, dev.lastSubmit().options.tag]);
}

function markersOf(world, clip) {
    return JSON.parse(String(world.getValue(clip, "warp_markers")[0])).warp_markers.map((m) => [m.beat_time, m.sample_time]);
}

function get(world, clip, name) {
    return Number(world.getValue(clip, name)[0]);
}

// A warped Arrangement clip whose start marker is 4 beats in, with a warp marker inside its region: the
// file is 120 BPM but not evenly (beat 8 sits at 3 s), the Set plays at 100 BPM.
function warpedArrangementClip(world, track) {
    return world.selectAudioClip({
        file_path: "/Users/me/Samples/Break.wav", name: "Break", warping: 1, start_marker: 4, end_marker: 12,
        start_time: 32, color: 0x1e90ff,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 8, sample_time: 3 },
            { beat_time: 16, sample_time: 8 }] }),
    }, { track });
}

test("Stems sends the clip's region of its sample as a stems job (file seconds through the warp markers)", () => {
    const { world, dev } = ready({ deviceTrack: 2, setPath: "/Users/me/Music/Beat Project/Beat.als", tempo: 100 });
    warpedArrangementClip(world, 0);
    dev.send("stems");
    const s = dev.lastSubmit();
    assert.equal(s.kind, "stems");
    assert.deepEqual([s.options.audio, s.options.start, s.options.end], ["/Users/me/Samples/Break.wav", 1.5, 5.5]);
    assert.equal(s.options.stem_model, "htdemucs");
    assert.equal(s.options.results_dir, "/Users/me/Music/Beat Project/Samples/M2UGen");
    assert.equal(s.options.prompt, undefined, "a stems job has no prompt");
    dev.send("stems6", 1);
    dev.receive("/m2u/accepted", ["x", 0, s.options.tag]);
    dev.receive("/m2u/cancelled", ["x"]);
    dev.send("stems");
    assert.equal(dev.lastSubmit().options.stem_model, "htdemucs_6s");
});

test("warped Arrangement clip with a start-marker offset: 4 stem tracks after its track, in time with it", async () => {
    const { world, dev } = ready({ deviceTrack: 2, tempo: 100, view: "Session" });
    const source = warpedArrangementClip(world, 0);
    const sourceSpan = get(world, source, "end_time") - get(world, source, "start_time");
    dev.send("stems");
    accept(dev, "st1");
    await finishStems(dev, "st1", stemFiles("st1", 4.0), 4.0);
    assert.deepEqual(calls(world, "create_audio_track").map((c) => c.args), [[1], [2], [3], [4]],
        "right after the source clip's track (not the device's, not the focused Session view)");
    const tracks = world.song.values.tracks.slice(1, 5);
    assert.deepEqual(tracks.map((t) => t.values.name), STEMS4.map((s) => `Break - ${s}`));
    for (const t of tracks) {
        assert.equal(t.values.color, 0x1e90ff, "colored like the source clip");
        assert.equal(t.values.arrangement_clips.length, 1);
        const clip = t.values.arrangement_clips[0];
        assert.equal(clip.values.start_time, 32, "at the source clip's position");
        assert.equal(clip.values.warping, 1);
        assert.deepEqual(markersOf(world, clip), [[0, 0], [4, 1.5], [8, 4]], "the source's warp markers of the region");
        assert.deepEqual([get(world, clip, "start_marker"), get(world, clip, "end_marker")], [0, 8]);
        const span = get(world, clip, "end_time") - get(world, clip, "start_time");
        assert.ok(Math.abs(span - sourceSpan) < 1e-9, `a stem spans ${span} beats, its source ${sourceSpan}`);
        assert.equal(clip.values.name, t.values.name);
    }
    assert.equal(source.values.muted, 1, "the stems replace the source in playback");
    assert.equal(world.undo.steps.length, 1, "one undo step");
    assert.equal(world.undo.depth, 0);
    assert.match(dev.lastStatus(), /Placed 4 stems on tracks 2-5 at beat 32; source clip muted/);
    await dev.close();
});

test("Session clip with its loop brace past the end marker: stems in the same scene, same start, end and loop", async () => {
    const { world, dev } = ready({ tracks: 4, deviceTrack: 3, tempo: 120, view: "Arranger", selectedScene: 0 });
    // the file at 120 BPM (2 beats a second); the clip starts at beat 2, its loop runs 1..9
    const source = world.selectAudioClip({
        file_path: "/Users/me/Samples/Loop.wav", name: "Loop", warping: 1, start_marker: 2, end_marker: 6,
        looping: 1, loop_start: 1, loop_end: 9,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 16, sample_time: 8 }] }),
    }, { track: 1, slot: 2 });
    dev.send("stems");
    const o = dev.lastSubmit().options;
    assert.deepEqual([o.start, o.end], [0.5, 4.5], "the region covers the loop brace (beats 1..9)");
    accept(dev, "st2");
    await finishStems(dev, "st2", stemFiles("st2", 4.0), 4.0);
    assert.deepEqual(calls(world, "create_audio_track").map((c) => c.args), [[2], [3], [4], [5]]);
    assert.equal(calls(world, "create_audio_clip").every((c) => / clip_slots 2$/.test(c.path)), true,
        "each stem in the source clip's scene (not the selected scene, not the Arrangement the view shows)");
    for (let k = 0; k < 4; k++) {
        const clip = world.song.values.tracks[2 + k].values.clip_slots[2].values.clip;
        assert.equal(clip.values.looping, 1);
        assert.deepEqual(["start_marker", "end_marker", "loop_start", "loop_end"].map((n) => get(world, clip, n)), [1, 5, 0, 8]);
        assert.deepEqual(markersOf(world, clip), [[0, 0], [8, 4]]);
    }
    assert.equal(source.values.muted, 1);
    assert.match(dev.lastStatus(), /session, scene 3/);
    await dev.close();
});

test("an unwarped clip: stems play at their own speed with the clip's start and end in seconds", async () => {
    const { world, dev } = ready({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: "/Users/me/take.wav", name: "Take", warping: 0, start_marker: 1.25, end_marker: 3.25,
        start_time: 8 }, { track: 2 });
    dev.send("stems");
    assert.deepEqual([dev.lastSubmit().options.start, dev.lastSubmit().options.end], [1.25, 3.25]);
    accept(dev, "st3");
    await finishStems(dev, "st3", stemFiles("st3", 2.0), 2.0);
    const clip = world.song.values.tracks[3].values.arrangement_clips[0];
    assert.equal(clip.values.warping, 0);
    assert.equal(clip.values.looping, 0);
    assert.deepEqual([get(world, clip, "start_marker"), get(world, clip, "end_marker")], [0, 2]);
    assert.equal(clip.values.start_time, 8);
    await dev.close();
});

test("an unsaved Set: results go to the bridge's folder ('user') and the stems are still placed", async () => {
    const { world, dev } = ready({ deviceTrack: 1, setPath: "" });
    world.selectAudioClip({ file_path: "/Users/me/a.wav", name: "A", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("stems");
    assert.equal(dev.lastSubmit().options.results_dir, "user", "no Samples/M2UGen without a Set folder");
    accept(dev, "st4");
    await finishStems(dev, "st4", stemFiles("st4", 2.0), 2.0);
    assert.deepEqual(world.song.values.tracks.slice(1, 5).map((t) => t.values.name), STEMS4.map((s) => `A - ${s}`));
    await dev.close();
});

test("a stems job that fails, or is cancelled, creates no tracks", async () => {
    const { world, dev } = ready({ deviceTrack: 1 });
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    const before = world.song.values.tracks.length;
    dev.send("stems");
    accept(dev, "f1");
    dev.receive("/m2u/error", ["f1", "job_failed", "demucs weights not found: htdemucs.th"]);
    await settle(dev);
    assert.match(dev.lastStatus(), /Error job_failed: demucs weights not found/);
    dev.send("stems");
    accept(dev, "f2");
    dev.receive("/m2u/cancelled", ["f2"]);
    dev.send("stems");
    accept(dev, "f3");
    dev.send("cancel");
    await finishStems(dev, "f3", stemFiles("f3", 2.0), 2.0);   // arrives after Cancel: ignored
    assert.equal(world.song.values.tracks.length, before);
    assert.equal(calls(world, "create_audio_track").length, 0);
    await dev.close();
});

test("a stem Live cannot import stops there: no empty track, the stems before it stay, the source keeps playing", async () => {
    const { world, dev } = ready({ deviceTrack: 1 });
    const source = world.selectAudioClip({ file_path: "/Users/me/a.wav", name: "A", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    const files = stemFiles("st5", 2.0);
    files[2] = path.join(TMP, "M2UGen-other-st5-missing.wav");   // the stub refuses a file that is not there
    dev.send("stems");
    accept(dev, "st5");
    await finishStems(dev, "st5", files, 2.0);
    assert.deepEqual(world.song.values.tracks.slice(1, 3).map((t) => t.values.name), ["A - drums", "A - bass"]);
    assert.equal(world.song.values.tracks.length, 3 + 2, "the other's track was deleted again, vocals not tried");
    assert.equal(source.values.muted, 0, "incomplete stems do not replace the source");
    assert.match(dev.lastStatus(), /Placed 2 stems.*stopped at the other: file not found/);
    await dev.close();
});

test("6-stem results: guitar and piano get their own tracks, names read from the files", async () => {
    const { world, dev } = ready({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: "/Users/me/song.wav", name: "Song", warping: 0, start_marker: 0, end_marker: 2, start_time: 4 }, { track: 0 });
    dev.send("stems6", 1);
    dev.send("stems");
    accept(dev, "st6");
    const files = stemFiles("st6", 2.0, STEMS6);
    files[4] = "";   // the bridge could not fetch the guitar
    await finishStems(dev, "st6", files, 2.0);
    assert.deepEqual(world.song.values.tracks.slice(1, 6).map((t) => t.values.name),
        ["drums", "bass", "other", "vocals", "piano"].map((s) => `Song - ${s}`));
    assert.match(dev.lastStatus(), /Placed 5 stems.*not fetched: guitar/);
    await dev.close();
});

test("Live before 11.3.25 has no create_audio_clip: no track is made, the stems' folder is revealed", async () => {
    const { world, dev } = ready({ deviceTrack: 0, version: [11, 3, 20] });
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0 });
    dev.send("stems");
    accept(dev, "st7");
    const files = stemFiles("st7", 2.0);
    await finishStems(dev, "st7", files, 2.0);
    assert.equal(calls(world, "create_audio_track").length, 0);
    assert.match(dev.lastStatus(), /Live 11\.3\.20 cannot import audio.*The stems are in that folder/);
    assert.deepEqual(dev.messnamed.pop().slice(0, 2), ["max", "launchbrowser"]);
    await dev.close();
});

test("Stems needs an audio clip: nothing is sent for a MIDI clip or no clip", () => {
    const { world, dev } = ready();
    dev.send("stems");
    assert.match(dev.lastStatus(), /Stems needs an audio clip/);
    world.selectMidiClip([{ pitch: 60, start_time: 0, duration: 1, velocity: 100, mute: 0 }]);
    dev.send("stems");
    assert.match(dev.lastStatus(), /Stems needs an audio clip/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/submit").length, 0);
});

test("a stems job re-inserted from the job list: tracks after the device, names from the files", async () => {
    const { world, dev } = ready({ deviceTrack: 1, view: "Arranger", loop: 1, loopStart: 16 });
    dev.receive("/m2u/job", [0, 1, "st8", "stems", "done", "", 2.0, "10:00"]);
    dev.receive("/m2u/jobs", [1]);
    dev.send("pick_job", 0);
    dev.send("reinsert");
    const shuffled = ["vocals", "drums", "other", "bass"];  // not the model's order: the names must come from the files
    await finishStems(dev, "st8", stemFiles("st8", 2.0, shuffled), 2.0);
    assert.deepEqual(world.song.values.tracks.slice(2, 6).map((t) => t.values.name), shuffled.map((s) => `Stems - ${s}`));
    assert.equal(world.song.values.tracks[2].values.arrangement_clips[0].values.start_time, 16);
    await dev.close();
});

// ---- Edit's stem options --------------------------------------------------------------------------

function editWith(options) {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/mix.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("mode", "edit");
    for (const [k, v] of options) dev.send(k, ...[].concat(v));
    dev.send("go");
    return dev;
}

test("Edit stem options: op, stem, with and the model go on the submit; auto sends none", () => {
    let o = editWith([["prompt", "make it darker"]]).lastSubmit().options;
    assert.equal(o.op, undefined, "auto: the server reads the prompt");
    o = editWith([["stem_op", 1], ["stem", "drums"]]).lastSubmit().options;
    assert.deepEqual([o.op, o.stem, o.stem_model, o.prompt], ["remove", "drums", "htdemucs", "remove the drums"],
        "an empty prompt is made from the op");
    o = editWith([["prompt", "keep it tight"], ["stem_op", "keep"], ["stem", 3]]).lastSubmit().options;
    assert.deepEqual([o.op, o.stem, o.prompt], ["keep", "vocals", "keep it tight"]);
    o = editWith([["stem_op", "replace"], ["stem", "piano"], ["stem_with", ["warm", "strings"]]]).lastSubmit().options;
    assert.deepEqual([o.op, o.stem, o.instrument, o.stem_model, o.prompt],
        ["replace", "piano", "warm strings", "htdemucs_6s", "replace the piano with warm strings"]);
    o = editWith([["stem_op", "add"], ["stem", "bass"], ["stem_with", "a shaker"]]).lastSubmit().options;
    assert.deepEqual([o.op, o.stem, o.instrument, o.stem_model], ["add", undefined, "a shaker", undefined]);
    o = editWith([["stems6", 1], ["stem_op", "remove"], ["stem", "other"]]).lastSubmit().options;
    assert.equal(o.stem_model, "htdemucs_6s");
});

test("Edit stem options refused on the device: replace without 'with', loop or bars, unknown names", () => {
    let dev = editWith([["stem_op", "replace"], ["stem", "drums"]]);
    assert.match(dev.lastStatus(), /type what the new part is/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/submit").length, 0);
    dev = editWith([["stem_op", "remove"], ["loop", 1]]);
    assert.match(dev.lastStatus(), /keeps the source's length/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/submit").length, 0);
    dev = editWith([["stem", "cowbell"], ["stem_op", "mute"], ["prompt", "x"]]);
    assert.match(dev.ui("status").map((s) => s[0]).join("\n"), /Unknown stem 'cowbell'[^]*Unknown stem operation 'mute'/);
    assert.equal(dev.lastSubmit().options.op, undefined, "the settings stay as they were");
});

test("a stem edit's result is placed like any edit (one track, source muted)", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger" });
    const source = world.selectAudioClip({ file_path: "/Users/me/mix.wav", warping: 0, start_marker: 0, end_marker: 2, start_time: 8 }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("stem_op", "remove");
    dev.send("stem", "vocals");
    dev.send("go");
    accept(dev, "e1");
    dev.receive("/m2u/done", ["e1", wav("M2UGen-remove-the-vocals-e1.wav", 2.0), 2.0, 32000]);
    await settle(dev);
    assert.equal(calls(world, "create_audio_track").length, 1);
    assert.match(world.song.values.tracks[1].values.name, /^M2UGen edit: remove the vocals/);
    assert.equal(source.values.muted, 1);
    await dev.close();
});

test("the first stem cannot be imported: no track is left, the status names the folder", async () => {
    const { world, dev } = ready({ deviceTrack: 1 });
    const source = world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    const before = world.song.values.tracks.length;
    dev.send("stems");
    accept(dev, "st9");
    await finishStems(dev, "st9", STEMS4.map((s) => path.join(TMP, `M2UGen-${s}-st9-gone.wav`)), 2.0);
    assert.equal(world.song.values.tracks.length, before);
    assert.equal(source.values.muted, 0);
    assert.match(dev.lastStatus(), new RegExp(`Live could not import the stems \\(the drums: file not found.*Files in: ${TMP}`));
    await dev.close();
});

test("the source clip deleted while the job ran: the stems go after the device's track, at their own speed", async () => {
    const { world, dev } = ready({ deviceTrack: 2, view: "Session", selectedScene: 1 });
    world.selectAudioClip({ file_path: "/Users/me/a.wav", name: "A", warping: 1, start_marker: 0, end_marker: 4,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 8, sample_time: 4 }] }) },
    { track: 0, slot: 0 });
    dev.send("stems");
    accept(dev, "st10");
    world.song.values.tracks[0].values.clip_slots[0].values.clip = null;   // the user deletes the clip
    world.song.values.tracks[0].values.clip_slots[0].values.has_clip = 0;
    await finishStems(dev, "st10", stemFiles("st10", 2.0), 2.0);
    assert.deepEqual(calls(world, "create_audio_track").map((c) => c.args), [[3], [4], [5], [6]]);
    const clip = world.song.values.tracks[3].values.clip_slots[1].values.clip;
    assert.equal(clip.values.warping, 0);
    assert.equal(world.song.values.tracks[3].values.name, "A - drums");
    await dev.close();
});
