// The device JS against the LOM stub (names checked against ableton-live-stubs) and a fake bridge.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const dgram = require("dgram");
const { World, makeLiveAPI, loadNames } = require("./lom_stub");
const { Device, DEVICE_JS } = require("./harness");
const osc = require("./osc");
const pure = require(DEVICE_JS);

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "m2u-max-"));
const RESULT = path.join(TMP, "result.wav");
fs.writeFileSync(RESULT, "RIFF"); // the stub only checks that the file exists

function ready(options, deviceOptions) {
    const world = new World(options);
    const dev = new Device(world, deviceOptions);
    dev.send("init");
    return { world, dev };
}

function calls(world, name) {
    return world.log.filter((e) => e.op === "call" && e.name === name);
}

async function freePort() {
    const s = dgram.createSocket("udp4");
    await new Promise((r) => s.bind(0, "127.0.0.1", r));
    const p = s.address().port;
    await new Promise((r) => s.close(r));
    return p;
}

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

async function runJob(dev, job, donePath) {
    dev.receive("/m2u/accepted", [job, 0]);
    dev.receive("/m2u/progress", [job, 0.5, "generating"]);
    dev.receive("/m2u/done", [job, donePath, 2.0, 32000]);
    await sleep(20); // placement runs from a Task
}

// ---- the file itself ----------------------------------------------------------------------------

test("device JS parses as ES5 (SpiderMonkey 1.8.5 in Max's [js])", () => {
    const acornPath = path.join(__dirname, "..", "..", "max_device", "node_modules", "acorn");
    let acorn;
    try {
        acorn = require(acornPath);
    } catch (e) {
        throw new Error("acorn is missing: run `npm install` in max_device/ (./dev setup does it)");
    }
    const src = fs.readFileSync(DEVICE_JS, "utf8");
    assert.doesNotThrow(() => acorn.parse(src, { ecmaVersion: 5, sourceType: "script" }));
    assert.throws(() => acorn.parse("let x = 1;", { ecmaVersion: 5 }), /reserved|Unexpected/);
});

test("LOM names come from ableton-live-stubs", () => {
    const names = loadNames();
    assert.ok(names.classes.Song.methods.includes("create_audio_track"));
    assert.ok(names.classes.Track.methods.includes("create_audio_clip"));
    assert.ok(names.classes.ClipSlot.methods.includes("create_audio_clip"));
    assert.ok("focused_document_view" in names.classes["Application.View"].properties);
    assert.ok(!names.classes.Song.methods.includes("render_audio")); // the LOM has no render call
});

test("LOM stub refuses names that are not in the stubs", () => {
    const world = new World();
    const LiveAPI = makeLiveAPI(world);
    assert.throws(() => new LiveAPI("live_set").get("no_such_property"), /Song has no property 'no_such_property'/);
    assert.throws(() => new LiveAPI("live_set").call("export_audio"), /Song has no function 'export_audio'/);
    assert.throws(() => new LiveAPI("live_set tracks 0").set("has_audio_input", 0), /read-only/);
    assert.throws(() => new LiveAPI("live_set bogus_child"), /no property 'bogus_child'/);
    assert.deepEqual(new LiveAPI("live_set").get("tempo"), [120]);
    const parent = new LiveAPI("this_device canonical_parent");
    assert.equal(parent.unquotedpath, "this_device canonical_parent");
    assert.equal(new LiveAPI("id " + parent.id).unquotedpath, "live_set tracks 1");
    assert.equal(new LiveAPI("id " + parent.id).path, '"live_set tracks 1"');
});

// ---- pure helpers -------------------------------------------------------------------------------

test("Live versions with create_audio_clip: 11.3.25+ and 12.0.5+", () => {
    const ok = pure.supportsAudioClipImport;
    assert.equal(ok(11, 3, 24), false);
    assert.equal(ok(11, 3, 25), true);
    assert.equal(ok(11, 2, 99), false);
    assert.equal(ok(12, 0, 4), false);
    assert.equal(ok(12, 0, 5), true);
    assert.equal(ok(12, 1, 0), true);
    assert.equal(ok(13, 0, 0), true);
    assert.equal(ok(10, 1, 30), false);
});

test("track index from the device's canonical parent path", () => {
    assert.equal(pure.trackIndexFromPath("live_set tracks 3"), 3);
    assert.equal(pure.trackIndexFromPath("live_set tracks 12 devices 0 chains 1"), 12);
    assert.equal(pure.trackIndexFromPath("live_set return_tracks 0"), -1);
    assert.equal(pure.trackIndexFromPath("live_set master_track"), -1);
});

test("clip markers: beats to seconds", () => {
    // unwarped: markers are seconds already
    assert.equal(pure.beatsToFileSeconds(3.5, false, [], 120), 3.5);
    // warped, no markers: at the song tempo (120 bpm = 0.5 s per beat)
    assert.equal(pure.beatsToFileSeconds(8, true, [], 120), 4);
    // warped with markers: 0 beats = 0 s, 4 beats = 1 s, 8 beats = 3 s
    const m = [{ beat_time: 0, sample_time: 0 }, { beat_time: 4, sample_time: 1 }, { beat_time: 8, sample_time: 3 }];
    assert.equal(pure.beatsToFileSeconds(2, true, m, 120), 0.5);
    assert.equal(pure.beatsToFileSeconds(6, true, m, 120), 2);
    assert.equal(pure.beatsToFileSeconds(10, true, m, 120), 4);
    assert.throws(() => pure.beatsToFileSeconds(1, true, [], 0), /tempo/);
});

test("Max paths to native paths", () => {
    assert.equal(pure.maxPathToNative("Macintosh HD:/Users/me/a.wav", "macintosh"), "/Users/me/a.wav");
    assert.equal(pure.maxPathToNative("Data:/loops/a.wav", "macintosh"), "/Volumes/Data/loops/a.wav");
    assert.equal(pure.maxPathToNative("C:/Users/me/a.wav", "windows"), "C:/Users/me/a.wav");
    assert.equal(pure.maxPathToNative("/tmp/a.wav", "macintosh"), "/tmp/a.wav");
});

// ---- requests -----------------------------------------------------------------------------------

test("init configures [udpsend]/[udpreceive] and declares the reply port", () => {
    const { dev } = ready();
    assert.deepEqual(dev.outlets[0].slice(0, 2), [["host", "127.0.0.1"], ["port", 9100]]);
    assert.deepEqual(dev.outlets[1], [["port", 9101]]);
    assert.deepEqual(dev.osc()[0], ["/m2u/hello", 9101]);
    dev.send("reply_port", 9200);
    assert.deepEqual(dev.outlets[1][1], ["port", 9200]);
    assert.deepEqual(dev.osc().pop(), ["/m2u/hello", 9200]);
    dev.send("reply_port", 70000);
    assert.match(dev.lastStatus(), /Reply port must be 1\.\.65535/);
});

test("generate sends context, conditioning and a loop-length duration", () => {
    const { dev } = ready({ tempo: 120, loop: 1, loopStart: 16, loopLength: 8 });
    dev.send("mode", 2);
    dev.send("conditioning", 1);
    dev.send("prompt", "lofi", "piano", "with", "vinyl");
    dev.send("go");
    const sent = dev.osc();
    assert.deepEqual(sent.slice(-4), [
        ["/m2u/set", "bpm", 120, 9101],
        ["/m2u/set", "time_signature", 4, 4, 9101],
        ["/m2u/set", "conditioning", "embedding", 9101],
        ["/m2u/generate", "lofi piano with vinyl", 4, 9101], // 8 beats at 120 bpm = 4 s
    ]);
    assert.match(dev.lastStatus(), /Sent generate/);
    dev.send("go");
    assert.match(dev.lastStatus(), /A job is running/);
    return dev.close();
});

test("edit sends the selected clip's file and region (warped: beats via warp markers)", () => {
    const { world, dev } = ready({ tempo: 100 });
    world.selectAudioClip({
        file_path: "/Users/me/loops/drums.wav", warping: 1, start_marker: 4, end_marker: 12, start_time: 32,
        warp_markers: JSON.stringify({ warp_markers: [{ beat_time: 0, sample_time: 0 }, { beat_time: 16, sample_time: 8 }] }),
    }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("duration", 6);
    dev.send("prompt", "more cowbell");
    dev.send("go");
    assert.deepEqual(dev.osc().pop(), ["/m2u/edit", "more cowbell", "/Users/me/loops/drums.wav", 2, 6, 6, 9101]);
    return dev.close();
});

test("ask on an unwarped session clip sends seconds markers", () => {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/a b.wav", warping: 0, start_marker: 1.25, end_marker: 9.5 }, { track: 2, slot: 1 });
    dev.send("mode", 0);
    dev.send("prompt", "what instruments play here?");
    dev.send("go");
    assert.deepEqual(dev.osc().pop(), ["/m2u/ask", "what instruments play here?", "/Users/me/a b.wav", 1.25, 9.5, 9101]);
    return dev.close();
});

test("ask without clip or recording explains what is missing and sends nothing", () => {
    const { dev } = ready();
    dev.send("mode", 0);
    dev.send("prompt", "describe");
    const before = dev.osc().length;
    dev.send("go");
    assert.equal(dev.osc().length, before);
    assert.match(dev.lastStatus(), /ask needs audio: select an audio clip or record/);
});

test("empty prompt and bad settings are refused with a clear status", () => {
    const { dev } = ready();
    dev.send("go");
    assert.match(dev.lastStatus(), /Type a prompt first/);
    dev.send("mode", "remix");
    assert.match(dev.lastStatus(), /Unknown mode 'remix'/);
    dev.send("duration", 301);
    assert.match(dev.lastStatus(), /Duration must be 0 \(automatic\) to 300/);
    dev.send("conditioning", "audio");
    assert.match(dev.lastStatus(), /Unknown conditioning 'audio'/);
});

test("recording: buffer~ cleared, record~ started/stopped, WAV written next to the device, used by edit", async () => {
    const { dev } = ready({ songTime: 12 });
    dev.send("rec", 1);
    assert.deepEqual(dev.outlets[3].slice(0, 2), [["buffer", "clear"], ["record", 1]]);
    await sleep(60);
    dev.send("rec", 0);
    const out = dev.outlets[3];
    assert.deepEqual(out[2], ["record", 0]);
    assert.equal(out[3][0], "buffer");
    assert.equal(out[3][1], "writewave");
    assert.match(out[3][2], /^Macintosh HD:\/Users\/me\/Music\/M2UGen\/m2ugen-capture-\d+\.wav$/);
    dev.send("mode", "edit");
    dev.send("prompt", "add strings");
    dev.send("go");
    const msg = dev.osc().pop();
    assert.equal(msg[0], "/m2u/edit");
    assert.match(msg[2], /^\/Users\/me\/Music\/M2UGen\/m2ugen-capture-\d+\.wav$/);
    assert.equal(msg[3], 0);
    assert.ok(msg[4] >= 0.05 && msg[4] < 5, `recorded seconds ${msg[4]}`);
    await dev.close();
});

// ---- results into the Set -----------------------------------------------------------------------

test("arrangement: new audio track right after the device's track, clip at the loop start", async () => {
    const { world, dev } = ready({ deviceTrack: 1, view: "Arranger", loop: 1, loopStart: 16 });
    dev.send("prompt", "dark ambient drone");
    dev.send("go");
    await runJob(dev, "j1", RESULT);
    assert.deepEqual(calls(world, "create_audio_track").map((c) => c.args), [[2]]);
    const clipCalls = calls(world, "create_audio_clip");
    assert.deepEqual(clipCalls.map((c) => [c.path, c.args]), [["live_set tracks 2", [RESULT, 16]]]);
    const track = world.song.values.tracks[2];
    assert.equal(track.values.arrangement_clips.length, 1);
    assert.equal(track.values.arrangement_clips[0].values.file_path, RESULT);
    assert.equal(track.values.arrangement_clips[0].values.warping, 0);
    assert.match(track.values.name, /^M2UGen generate: dark ambient drone/);
    assert.match(dev.lastStatus(), /Placed on track 3 at beat 16/);
    await dev.close();
});

test("edit of an arrangement clip lands under the clip (its start_time)", async () => {
    const { world, dev } = ready({ deviceTrack: 0 });
    world.selectAudioClip({ file_path: "/Users/me/x.wav", warping: 0, start_marker: 0, end_marker: 4, start_time: 40 }, { track: 0 });
    dev.send("mode", "edit");
    dev.send("prompt", "brighter");
    dev.send("go");
    await runJob(dev, "j2", RESULT);
    assert.deepEqual(calls(world, "create_audio_track")[0].args, [1]);
    assert.deepEqual(calls(world, "create_audio_clip")[0].args, [RESULT, 40]);
    await dev.close();
});

test("session view: ClipSlot.create_audio_clip in the selected scene's slot", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Session", selectedScene: 2 });
    dev.send("prompt", "techno loop");
    dev.send("go");
    await runJob(dev, "j3", RESULT);
    const c = calls(world, "create_audio_clip");
    assert.deepEqual(c.map((x) => [x.path, x.args]), [["live_set tracks 1 clip_slots 2", [RESULT]]]);
    assert.equal(world.song.values.tracks[1].values.clip_slots[2].values.has_clip, 1);
    assert.match(dev.lastStatus(), /Placed on track 2 \(session\)/);
    await dev.close();
});

test("placement is deferred: nothing changes the Set inside the /m2u/done handler", () => {
    const { world, dev } = ready();
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j4", 0]);
    world.inNotification = true; // any Set change now would throw like Max does in a notification
    dev.receive("/m2u/done", ["j4", RESULT, 1.0, 32000]);
    world.inNotification = false;
    assert.equal(calls(world, "create_audio_track").length, 0);
    assert.equal(dev.pendingTasks.size, 1);
    return sleep(20).then(() => {
        assert.equal(calls(world, "create_audio_track").length, 1);
        return dev.close();
    });
});

for (const style of ["throw", "silent"]) {
    test(`failed import (${style}) deletes the empty track again`, async () => {
        const { world, dev } = ready({ tracks: 3, deviceTrack: 1, failImport: style });
        dev.send("prompt", "x");
        dev.send("go");
        await runJob(dev, "j5", RESULT);
        assert.deepEqual(calls(world, "create_audio_track")[0].args, [2]);
        assert.deepEqual(calls(world, "delete_track").map((c) => c.args), [[2]]);
        assert.equal(world.song.values.tracks.length, 3);
        assert.match(dev.lastStatus(), /Live could not import the result.*File: /);
        await dev.close();
    });
}

test("older Live: no track created, clear message and the folder revealed", async () => {
    const { world, dev } = ready({ version: [12, 0, 2] });
    dev.send("prompt", "x");
    dev.send("go");
    await runJob(dev, "j6", RESULT);
    assert.equal(calls(world, "create_audio_track").length, 0);
    assert.match(dev.lastStatus(), /Live 12\.0\.2 cannot import audio from a device \(needs 11\.3\.25\+ or 12\.0\.5\+\)/);
    assert.deepEqual(dev.messnamed[0].slice(0, 2), ["max", "launchbrowser"]);
    assert.equal(dev.messnamed[0][2], "file://" + encodeURI(TMP));
    await dev.close();
});

// ---- events -------------------------------------------------------------------------------------

test("progress, text chunks, ask answer and errors reach the UI", async () => {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0 });
    dev.send("mode", "ask");
    dev.send("prompt", "what key?");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j7", 2]);
    assert.match(dev.lastStatus(), /Queued at position 2/);
    dev.receive("/m2u/progress", ["other", 0.9, "thinking"]); // another client's job: ignored
    dev.receive("/m2u/progress", ["j7", 0.25, "thinking"]);
    assert.deepEqual(dev.ui("progress").pop(), [0.25]);
    dev.receive("/m2u/text", ["j7", 1, 2, "minor."]);
    dev.receive("/m2u/text", ["j7", 0, 2, "It is in A "]);
    assert.deepEqual(dev.ui("answer").pop(), ["It is in A minor."]);
    dev.receive("/m2u/done", ["j7", "", 0, 0]);
    assert.match(dev.lastStatus(), /Answer ready/);
    await sleep(10);
    assert.equal(calls(world, "create_audio_track").length, 0);

    dev.send("go");
    dev.receive("/m2u/error", ["", "path_not_allowed", "audio path '/Users/me/a.wav' is outside the allowed roots"]);
    assert.match(dev.lastStatus(), /Error path_not_allowed: audio path/);
    assert.deepEqual(dev.ui("busy").pop(), [0]);
    await dev.close();
});

test("cancel sends /m2u/cancel with the job id", () => {
    const { dev } = ready();
    dev.send("cancel");
    assert.match(dev.lastStatus(), /Nothing to cancel/);
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j8", 0]);
    dev.send("cancel");
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "j8", 9101]);
    dev.receive("/m2u/cancelled", ["j8"]);
    assert.match(dev.lastStatus(), /Cancelled j8/);
    return dev.close();
});

test("no bridge: the status line says so after the accept timeout", async () => {
    const { dev } = ready();
    // a real UDP send to a port where nobody listens
    const probe = dgram.createSocket("udp4");
    await new Promise((r) => probe.bind(0, "127.0.0.1", r));
    const deadPort = probe.address().port;
    await new Promise((r) => probe.close(r));
    await dev.connectUdp();
    dev.send("reply_port", await freePort()); // first: never bind the default 9101
    dev.send("port", deadPort);
    dev.send("prompt", "x");
    dev.send("go");
    const t0 = Date.now();
    while (!/No answer from the bridge/.test(dev.lastStatus()) && Date.now() - t0 < 8000) await sleep(100);
    assert.match(dev.lastStatus(), new RegExp(`No answer from the bridge at 127\\.0\\.0\\.1:${deadPort}`));
    assert.deepEqual(dev.ui("busy").pop(), [0]);
    await dev.close();
});

test("talks OSC over UDP to a fake bridge and places the returned file", async () => {
    const bridge = dgram.createSocket("udp4");
    await new Promise((r) => bridge.bind(0, "127.0.0.1", r));
    const got = [];
    bridge.on("message", (buf, rinfo) => {
        for (const m of osc.decode(buf)) {
            got.push(m);
            const replyPort = m.args[m.args.length - 1];
            const reply = (address, args) => bridge.send(osc.encode(address, args), replyPort, "127.0.0.1");
            if (m.address === "/m2u/generate") {
                reply("/m2u/accepted", ["fake1", 0]);
                reply("/m2u/progress", ["fake1", 0.5, "generating"]);
                reply("/m2u/done", ["fake1", RESULT, 4.0, 32000]);
            }
        }
    });
    const replyPort = await freePort();

    const world = new World({ deviceTrack: 0, view: "Arranger", loop: 0, songTime: 8 });
    const dev = new Device(world);
    const udp = await dev.connectUdp();
    dev.send("port", bridge.address().port);
    dev.send("reply_port", replyPort);
    dev.send("init");
    dev.send("prompt", "warm pads");
    dev.send("go");
    await udp.waitFor(() => world.log.some((e) => e.name === "create_audio_clip"), 5000, "create_audio_clip");
    const gen = got.find((m) => m.address === "/m2u/generate");
    assert.deepEqual(gen.args, ["warm pads", 0, replyPort]);
    assert.ok(got.some((m) => m.address === "/m2u/hello" && m.args[0] === replyPort));
    assert.deepEqual(calls(world, "create_audio_clip")[0].args, [RESULT, 8]);
    await dev.close();
    await new Promise((r) => bridge.close(r));
});

test("a silent running job is polled with /m2u/status until its outcome arrives", async () => {
    const { dev } = ready();
    dev.sandbox.STATUS_POLL_MS = 40; // top-level var of the device script
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j9", 0]);
    await sleep(150);
    const polls = () => dev.osc().filter((m) => m[0] === "/m2u/status");
    assert.ok(polls().length >= 1, "polled at least once");
    assert.deepEqual(polls()[0], ["/m2u/status", "j9", 9101]);
    dev.receive("/m2u/status", ["j9", "running", 0.6, "generating", 0]);
    assert.deepEqual(dev.ui("progress").pop(), [0.6]);
    dev.receive("/m2u/done", ["j9", RESULT, 1.0, 32000]); // the outcome the bridge re-sends
    const n = polls().length;
    await sleep(150);
    assert.equal(polls().length, n, "no polling after the job finished");
    assert.match(dev.lastStatus(), /Placed on track/);
    await dev.close();
});
