// The device JS against the LOM stub (names checked against ableton-live-stubs) and a fake bridge.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const dgram = require("dgram");
const { World, makeLiveAPI, loadNames } = require("./lom_stub");
const { Device, DEVICE_JS, deviceFiles, parseSubmit, ready, calls, sleep, settle, freePort } = require("./harness");
const osc = require("./osc");
// the device's global scope, as Max's [js] holds it: its pure functions are tested from there
const pure = new Device(new World()).sandbox;

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "m2u-max-"));
const RESULT = path.join(TMP, "result.wav");
fs.writeFileSync(RESULT, "RIFF"); // the stub only checks that the file exists


async function runJob(dev, job, donePath) {
    dev.receive("/m2u/accepted", [job, 0]);
    dev.receive("/m2u/progress", [job, 0.5, "generating"]);
    dev.receive("/m2u/done", [job, donePath, 2.0, 32000]);
    await settle(dev);
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
    assert.ok(deviceFiles().length >= 5, "the device and the files it includes");
    for (const file of deviceFiles()) {
        const src = fs.readFileSync(file, "utf8");
        assert.doesNotThrow(() => acorn.parse(src, { ecmaVersion: 5, sourceType: "script" }), file);
    }
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

test("generate: one /m2u/submit carries context, options and a loop-length duration (no /m2u/set)", () => {
    const { dev } = ready({ tempo: 120, loop: 1, loopStart: 16, loopLength: 8 });
    dev.send("mode", 2);
    dev.send("conditioning", 1);
    dev.send("seed", 42);
    dev.send("takes", 3);
    dev.send("gen_mode", 1);
    dev.send("sample_rate", 48000); // from [dspstate~]
    dev.send("prompt", "lofi", "piano", "with", "vinyl");
    dev.send("go");
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/set").length, 0);
    assert.deepEqual(dev.lastSubmit(), { kind: "generate", options: {
        prompt: "lofi piano with vinyl", duration: 4, // 8 beats at 120 bpm = 4 s
        seed: 42, takes: 3, mode: "continue", conditioning: "embedding", bpm: 120, time_signature: [4, 4],
        results_dir: "user", reply_port: 9101, sample_rate: 48000, project_sample_rate: 48000,
        vocoder: "encodec", bars: 0, loop: 0, fit_tempo: 0, channels: 2, tag: dev.lastSubmit().options.tag,
    } });
    assert.match(dev.lastSubmit().options.tag, /^m2u-\d+-\d+-r1$/, "every request names itself");
    assert.match(dev.lastStatus(), /Sent generate, seed 42, 3 takes/);
    dev.send("go");
    assert.match(dev.lastStatus(), /A job is running/);
    return dev.close();
});

test("init asks [dspstate~] for Live's sample rate; unknown rates are not sent", () => {
    const { dev } = ready();
    assert.deepEqual(dev.outlets[3][0], ["dsp", "bang"]);
    dev.send("prompt", "x");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.sample_rate, undefined);
    dev.send("cancel");
    dev.send("sample_rate", 44100);
    dev.send("go");
    assert.equal(dev.lastSubmit().options.sample_rate, 44100);
    assert.equal(dev.lastSubmit().options.project_sample_rate, 44100);
    return dev.close();
});

test("results go next to the saved Set (Samples/M2UGen), else to the bridge's user folder", () => {
    const { dev } = ready({ setPath: "/Users/me/Music/Beat Project/Beat.als" });
    dev.send("prompt", "x");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.results_dir, "/Users/me/Music/Beat Project/Samples/M2UGen");
    assert.equal(pure.resultsFolder("C:\\Users\\me\\Beat Project\\Beat.als"), "C:\\Users\\me\\Beat Project\\Samples\\M2UGen");
    assert.equal(pure.resultsFolder(""), "user");
    return dev.close();
});

test("image and video dropped on the device go with generate only", () => {
    const { dev } = ready();
    dev.send("media", "Macintosh", "HD:/Users/me/Pictures/cat.png"); // live.drop splits at spaces
    assert.match(dev.ui("media").pop()[0], /^image: cat\.png$/);
    dev.send("prompt", "a", "cat");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.image, "/Users/me/Pictures/cat.png");
    dev.send("cancel");
    dev.send("media", "Macintosh HD:/Users/me/Movies/clip.mov");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.video, "/Users/me/Movies/clip.mov");
    assert.equal(dev.lastSubmit().options.image, undefined);
    dev.send("cancel");
    dev.send("media", "Macintosh HD:/Users/me/notes.txt");
    assert.match(dev.lastStatus(), /Drop an image .* or a video/);
    dev.send("media_clear");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.video, undefined);
    return dev.close();
});

test("bad seed and takes are refused", () => {
    const { dev } = ready();
    dev.send("seed", 1.5);
    assert.match(dev.lastStatus(), /Seed must be a whole number/);
    dev.send("takes", 9);
    assert.match(dev.lastStatus(), /Takes must be 1\.\.8/);
    dev.send("gen_mode", "remix");
    assert.match(dev.lastStatus(), /Unknown generation mode 'remix'/);
    assert.equal(dev.sandbox.settings.seed, -1);
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
    const sent = dev.lastSubmit();
    assert.equal(sent.kind, "edit");
    assert.deepEqual([sent.options.prompt, sent.options.audio, sent.options.start, sent.options.end, sent.options.duration],
        ["more cowbell", "/Users/me/loops/drums.wav", 2, 6, 6]);
    return dev.close();
});

test("ask on an unwarped session clip sends seconds markers", () => {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/a b.wav", warping: 0, start_marker: 1.25, end_marker: 9.5 }, { track: 2, slot: 1 });
    dev.send("mode", 0);
    dev.send("prompt", "what instruments play here?");
    dev.send("go");
    const sent = dev.lastSubmit();
    assert.equal(sent.kind, "ask");
    assert.deepEqual([sent.options.prompt, sent.options.audio, sent.options.start, sent.options.end, sent.options.takes],
        ["what instruments play here?", "/Users/me/a b.wav", 1.25, 9.5, 1]);
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

test("recording: cropped to what was recorded, written into the bridge's capture folder, used by edit", async () => {
    const { dev } = ready({ songTime: 12 });
    dev.send("rec", 1);
    assert.match(dev.lastStatus(), /Cannot record yet: the bridge has not answered/);
    dev.receive("/m2u/welcome", ["0.1", "up", "0.1", "tiny", 1, 32000, 9101, "/tmp/m2ugen-captures"]);
    dev.send("rec", 1);
    assert.deepEqual(dev.outlets[3].slice(1, 4), [["buffer", "size", 60000], ["buffer", "clear"], ["record", 1]]);
    await sleep(60);
    dev.send("rec", 0);
    const out = dev.outlets[3];
    assert.deepEqual(out[4], ["record", 0]);
    assert.equal(out[5][1], "crop");
    assert.ok(out[5][3] >= 50 && out[5][3] < 5000, `cropped to ${out[5][3]} ms`);
    assert.equal(out[6][1], "writewave");
    assert.match(out[6][2], /^\/tmp\/m2ugen-captures\/m2ugen-capture-9101-\d+\.wav$/);
    dev.send("mode", "edit");
    dev.send("prompt", "add strings");
    dev.send("go");
    const sent = dev.lastSubmit().options;
    assert.equal(sent.audio, out[6][2]);
    assert.equal(sent.start, 0);
    assert.ok(sent.end >= 0.05 && sent.end < 5, `recorded seconds ${sent.end}`);
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
    assert.equal(dev.jobTasks().length, 1);
    return settle(dev).then(() => {
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
    await settle(dev);
    assert.equal(calls(world, "create_audio_track").length, 0);

    dev.send("go");
    dev.receive("/m2u/error", ["", "bad_audio", "audio '/Users/me/a.wav' cannot be read: Permission denied"]);
    assert.match(dev.lastStatus(), /Error bad_audio: audio '\/Users\/me\/a.wav'/);
    assert.deepEqual(dev.ui("busy").pop(), [0]);
    await dev.close();
});

test("cancel sends /m2u/cancel and clears the device at once (no bridge needed to get unstuck)", async () => {
    const { world, dev } = ready();
    dev.send("cancel");
    assert.match(dev.lastStatus(), /Nothing to cancel/);
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j8", 0]);
    dev.send("cancel");
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "j8", 9101]);
    assert.match(dev.lastStatus(), /Cancelled j8/);
    assert.deepEqual(dev.ui("busy").pop(), [0]);
    assert.equal(dev.sandbox.state.slots.fg, null);
    assert.equal(dev.jobTasks().length, 0, "no poll or watchdog left running");
    dev.receive("/m2u/done", ["j8", RESULT, 1.0, 32000]); // a late outcome of the cancelled job: ignored
    await settle(dev);
    assert.equal(calls(world, "create_audio_track").length, 0);
    dev.send("go"); // and the device takes a new request right away
    assert.match(dev.lastStatus(), /Sent generate/);
    const tag = dev.lastSubmit().options.tag;
    dev.send("cancel"); // cancelling before /m2u/accepted: the watchdog stops, the job is cancelled once named
    assert.equal(dev.osc().pop()[0], "/m2u/submit", "no blind cancel of 'last' (it could hit a running learn)");
    assert.equal(dev.jobTasks().length, 0);
    dev.receive("/m2u/accepted", ["j9", 0, tag]);
    assert.deepEqual(dev.osc().pop(), ["/m2u/cancel", "j9", 9101]);
    await dev.close();
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
            const replyPort = m.address === "/m2u/submit" ? parseSubmit(m.args).options.reply_port : m.args[m.args.length - 1];
            const reply = (address, args) => bridge.send(osc.encode(address, args), replyPort, "127.0.0.1");
            if (m.address === "/m2u/submit") {
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
    dev.send("preview", 0);
    dev.send("init");
    dev.send("prompt", "warm pads");
    dev.send("go");
    await udp.waitFor(() => world.log.some((e) => e.name === "create_audio_clip"), 5000, "create_audio_clip");
    const gen = parseSubmit(got.find((m) => m.address === "/m2u/submit").args);
    assert.deepEqual([gen.kind, gen.options.prompt, gen.options.duration, gen.options.reply_port],
        ["generate", "warm pads", 0, replyPort]);
    assert.ok(got.some((m) => m.address === "/m2u/hello" && m.args[0] === replyPort));
    assert.deepEqual(calls(world, "create_audio_clip")[0].args, [RESULT, 8]);
    await dev.close();
    await new Promise((r) => bridge.close(r));
});

test("a silent running job is polled with /m2u/status until its outcome arrives", async () => {
    const { dev } = ready();
    // top-level var of the device script: every poll that comes due asks; the test fires the polls
    // itself (what Max's scheduler does when their time comes), so no clock decides the outcome
    dev.sandbox.STATUS_POLL_MS = 0;
    const polls = () => dev.osc().filter((m) => m[0] === "/m2u/status");
    const firePolls = () => dev.fireTasks((t) => t.what === "poll");
    dev.send("prompt", "x");
    dev.send("go");
    firePolls();
    assert.equal(polls().length, 0, "nothing to poll before the job is accepted");
    dev.receive("/m2u/accepted", ["j9", 0]);
    firePolls();
    assert.deepEqual(polls(), [["/m2u/status", "j9", 9101]]);
    dev.receive("/m2u/status", ["j9", "running", 0.6, "generating", 0]);
    assert.deepEqual(dev.ui("progress").pop(), [0.6]);
    firePolls();
    assert.equal(polls().length, 2, "a job still silent is asked again");
    dev.receive("/m2u/done", ["j9", RESULT, 1.0, 32000]); // the outcome the bridge re-sends
    assert.equal(dev.jobTasks().filter((t) => t.what === "poll").length, 0, "no poll left after the job finished");
    firePolls();
    assert.equal(polls().length, 2);
    await settle(dev);
    assert.match(dev.lastStatus(), /Placed on track/);
    await dev.close();
});

// ---- several devices, a bridge that goes away --------------------------------------------------

test("two devices in one Live get their own reply ports; a deleted device gives its port back", () => {
    const world = new World({ tracks: 4, deviceTrack: 0 });
    const a = new Device(world);
    const b = new Device(world, { thisDevice: world.addDevice(2) });
    a.send("init");
    b.send("init");
    assert.deepEqual(a.outlets[1].pop(), ["port", 9101]);
    assert.deepEqual(b.outlets[1].pop(), ["port", 9102]);
    assert.deepEqual(b.osc()[0], ["/m2u/hello", 9102]);
    for (const dev of [a, b]) {
        dev.send("prompt", "x");
        dev.send("go");
    }
    assert.equal(a.lastSubmit().options.reply_port, 9101);
    assert.equal(b.lastSubmit().options.reply_port, 9102);
    a.send("notifydeleted");
    const c = new Device(world, { thisDevice: world.addDevice(3) });
    c.send("init");
    assert.deepEqual(c.outlets[1].pop(), ["port", 9101]);
    b.send("reply_port", 9150); // set by hand: that port, and 9102 is free again
    assert.deepEqual(b.outlets[1].pop(), ["port", 9150]);
    const d = new Device(world, { thisDevice: world.addDevice(1) });
    d.send("init");
    assert.deepEqual(d.outlets[1].pop(), ["port", 9102]);
    return Promise.all([a, b, c, d].map((dev) => dev.close()));
});

test("two devices over UDP: each result reaches the device that asked and lands after its own track", async () => {
    const bridge = dgram.createSocket("udp4");
    await new Promise((r) => bridge.bind(0, "127.0.0.1", r));
    let count = 0;
    bridge.on("message", (buf) => {
        for (const m of osc.decode(buf)) {
            if (m.address !== "/m2u/submit") continue;
            const o = parseSubmit(m.args).options;
            const job = "job" + (++count);
            const send = (address, args) => bridge.send(osc.encode(address, args), o.reply_port, "127.0.0.1");
            send("/m2u/accepted", [job, 0]);
            send("/m2u/done", [job, RESULT, 1.0, 32000]);
        }
    });
    const world = new World({ tracks: 4, deviceTrack: 0, view: "Arranger" });
    const a = new Device(world);
    const b = new Device(world, { thisDevice: world.addDevice(2) });
    for (const dev of [a, b]) {
        await dev.connectUdp();
        dev.send("port", bridge.address().port);
        dev.send("reply_port", await freePort());
        dev.send("preview", 0);
        dev.send("init");
    }
    a.send("prompt", "from", "a");
    a.send("go");
    b.send("prompt", "from", "b");
    b.send("go");
    await a.udp.waitFor(() => /Placed/.test(a.lastStatus()) && /Placed/.test(b.lastStatus()), 5000, "both placed");
    const names = world.song.values.tracks.map((t) => t.values.name);
    // a (track 1) -> new track 2; b (track 3, now 4) -> new track after it
    assert.match(names[1], /generate: from a/);
    assert.match(names[4], /generate: from b/);
    await a.close();
    await b.close();
    await new Promise((r) => bridge.close(r));
});

test("polling gives up when the bridge disappears: a clear message and the device is free again", async () => {
    const { dev } = ready();
    dev.sandbox.STATUS_POLL_MS = 0; // the test fires each poll (see the test above)
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j10", 0]);
    for (let i = 0; i < 3; i++) dev.fireTasks((t) => t.what === "poll");
    assert.doesNotMatch(dev.lastStatus(), /stopped answering/);
    dev.fireTasks((t) => t.what === "poll");
    assert.match(dev.lastStatus(), /The bridge stopped answering \(3 status requests unanswered\): gave up waiting for job j10/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/status").length, 3);
    assert.deepEqual(dev.ui("busy").pop(), [0]);
    assert.equal(dev.jobTasks().length, 0);
    dev.send("go");
    assert.match(dev.lastStatus(), /Sent generate/);
    await dev.close();
});

test("a status reply resets the count: a slow job on a live bridge is not given up", async () => {
    const { dev } = ready();
    dev.sandbox.STATUS_POLL_MS = 0; // the test fires each poll (see above)
    dev.send("prompt", "x");
    dev.send("go");
    dev.receive("/m2u/accepted", ["j11", 0]);
    for (let i = 0; i < 8; i++) {
        dev.fireTasks((t) => t.what === "poll");
        dev.receive("/m2u/status", ["j11", "running", 0.1 * i, "generating", 0]);
    }
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/status").length, 8);
    assert.doesNotMatch(dev.lastStatus(), /stopped answering/);
    assert.equal(dev.sandbox.state.slots.fg.id, "j11");
    await dev.close();
});

// ---- preview, takes, analysis, job list -------------------------------------------------------

function takesDone(dev, job, paths, seconds) {
    dev.receive("/m2u/accepted", [job, 0]);
    paths.forEach((p, i) => dev.receive("/m2u/take", [job, i, paths.length, p, 100 + i]));
    dev.receive("/m2u/done", [job, paths[0], seconds, 48000]);
}

test("preview: the device plays the result; nothing is placed until Accept", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger" });
    dev.send("preview", 1);
    dev.send("seed", 7);
    dev.send("prompt", "pads");
    dev.send("go");
    dev.receive("/m2u/accepted", ["p1", 0]);
    dev.receive("/m2u/done", ["p1", RESULT, 2.0, 48000]);
    assert.deepEqual(dev.outlets[3].slice(-2), [["preview", "open", RESULT], ["preview", 1]]);
    assert.match(dev.lastStatus(), /Preview take 1\/1 \(seed 7\): Accept, Regenerate or Discard/);
    await settle(dev);
    assert.equal(calls(world, "create_audio_track").length, 0);
    dev.send("accept");
    assert.deepEqual(dev.outlets[3].pop(), ["preview", 0]);
    await settle(dev);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => c.args), [[RESULT, 16]]);
    assert.match(dev.lastStatus(), /Placed on track 2/);
    await dev.close();
});

test("preview: Discard places nothing; Regenerate sends the same request with the next seeds", async () => {
    const { world, dev } = ready();
    dev.send("preview", 1);
    dev.send("seed", 7);
    dev.send("takes", 2);
    dev.send("prompt", "pads");
    dev.send("go");
    const first = dev.lastSubmit();
    takesDone(dev, "p2", [RESULT, RESULT], 2.0);
    dev.send("play"); // the next take
    assert.match(dev.lastStatus(), /Preview take 2\/2 \(seed 101\)/);
    dev.send("regenerate");
    const again = dev.lastSubmit();
    assert.equal(again.options.seed, 9); // 7 + 2 takes: new seeds, nothing repeated
    assert.deepEqual({ ...again.options, seed: 0, tag: "" }, { ...first.options, seed: 0, tag: "" });
    assert.notEqual(again.options.tag, first.options.tag);
    takesDone(dev, "p3", [RESULT], 2.0);
    dev.send("discard");
    assert.match(dev.lastStatus(), /^Discarded \(the file stays in /);
    assert.deepEqual(dev.outlets[3].pop(), ["preview", 0]);
    dev.send("accept");
    assert.match(dev.lastStatus(), /Nothing to accept/);
    await settle(dev);
    assert.equal(calls(world, "create_audio_track").length, 0);
    dev.send("seed", -1);
    dev.send("go");
    takesDone(dev, "p4", [RESULT], 2.0);
    dev.send("regenerate");
    assert.equal(dev.lastSubmit().options.seed, -1); // random stays random
    await dev.close();
});

test("takes in the session: consecutive clip slots from the selected scene, scenes added when needed", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Session", scenes: 3, selectedScene: 1 });
    dev.send("takes", 3);
    dev.send("prompt", "drums");
    dev.send("go");
    takesDone(dev, "t1", [RESULT, RESULT, RESULT], 2.0);
    await settle(dev);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => c.path),
        ["live_set tracks 1 clip_slots 1", "live_set tracks 1 clip_slots 2", "live_set tracks 1 clip_slots 3"]);
    assert.deepEqual(calls(world, "create_scene").map((c) => c.args), [[-1]]);
    const slots = world.song.values.tracks[1].values.clip_slots;
    assert.deepEqual(slots.map((s) => s.values.has_clip), [0, 1, 1, 1]);
    assert.match(slots[2].values.clip.values.name, /\(take 2, seed 101\)$/);
    assert.match(dev.lastStatus(), /Placed 3 takes on track 2 \(session, scenes 2-4\)/);
    await dev.close();
});

test("takes in the arrangement: alternatives at the position, each on its own track", async () => {
    const { world, dev } = ready({ deviceTrack: 1, view: "Arranger", tempo: 120, loop: 1, loopStart: 8 });
    dev.send("takes", 2);
    dev.send("prompt", "drums");
    dev.send("go");
    takesDone(dev, "t2", [RESULT, RESULT], 2.0);
    await settle(dev);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => [c.path, c.args[1]]),
        [["live_set tracks 2", 8], ["live_set tracks 3", 8]]);
    assert.match(dev.lastStatus(), /Placed 2 takes on tracks 3-4 at beat 8 \(takes 2-2 muted\)/);
    await dev.close();
});

test("a take that fails to import keeps the takes placed before it and says which failed", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger" });
    dev.send("takes", 2);
    dev.send("prompt", "drums");
    dev.send("go");
    takesDone(dev, "t3", [RESULT, path.join(TMP, "missing.wav")], 2.0);
    await settle(dev);
    assert.equal(world.song.values.tracks[1].values.arrangement_clips.length, 1);
    assert.match(dev.lastStatus(), /Placed on track 2 .*take 2 failed: file not found/);
    await dev.close();
});

test("the answer text and the measured analysis are shown", () => {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/a.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0 });
    dev.send("mode", "ask");
    dev.send("prompt", "what key?");
    dev.send("go");
    dev.receive("/m2u/accepted", ["a1", 0]);
    dev.receive("/m2u/analysis", ["a1", "input", "92 BPM, F# minor, -14.0 LUFS, 8.0 s", "bpm", 92.0]);
    dev.receive("/m2u/analysis", ["other", "input", "not mine"]);
    dev.receive("/m2u/text", ["a1", 0, 1, "F# minor."]);
    dev.receive("/m2u/done", ["a1", "", 0, 0]);
    assert.deepEqual(dev.ui("answer").pop(), ["F# minor."]);
    assert.deepEqual(dev.ui("analysis").pop(), ["Input: 92 BPM, F# minor, -14.0 LUFS, 8.0 s"]);
    return dev.close();
});

test("job list: /m2u/jobs fills the menu; Re-insert fetches the result into the Set's folder and places it", async () => {
    const { world, dev } = ready({ deviceTrack: 0, view: "Arranger", setPath: "/Users/me/P/Set.als", preview: 1 });
    dev.send("preview", 1); // re-insert places directly even with preview on
    dev.send("reinsert");
    assert.match(dev.lastStatus(), /Pick a job in the list first/);
    dev.send("refresh_jobs");
    assert.deepEqual(dev.osc().pop(), ["/m2u/jobs", 20, 9101]);
    dev.receive("/m2u/job", [0, 2, "jb2", "ask", "done", "what key?", 0, "2026-12-01 22:10"]);
    dev.receive("/m2u/job", [1, 2, "jb1", "generate", "done", "warm pads", 4.0, "2026-12-01 22:00"]);
    dev.receive("/m2u/jobs", [2]);
    const menu = dev.ui("jobs_menu");
    assert.deepEqual(menu[0], ["clear"]);
    assert.deepEqual(menu.slice(1).map((m) => m[0]), ["append", "append"]);
    assert.match(menu[2][1], /^2026-12-01 22:00 generate warm pads$/);
    dev.send("pick_job", 0);
    dev.send("reinsert");
    assert.match(dev.lastStatus(), /Job jb2 has no audio to insert \(ask, done\)/);
    dev.send("pick_job", 1);
    dev.send("reinsert");
    assert.deepEqual(dev.osc().pop(), ["/m2u/result", "jb1", "/Users/me/P/Samples/M2UGen", 9101]);
    dev.receive("/m2u/done", ["jb1", RESULT, 4.0, 32000]);
    await settle(dev);
    assert.deepEqual(calls(world, "create_audio_clip").map((c) => c.args), [[RESULT, 16]]);
    assert.match(world.song.values.tracks[1].values.name, /generate: warm pads/);
    await dev.close();
});

// ---- issue 14: MIDI in and out; issues 11 / 16: bars, loop, fit tempo, vocoder ------------------------

test("vocoder, bars, loop and fit tempo go with generate/edit; bars replace the loop-length duration", () => {
    const { dev } = ready({ tempo: 120, loop: 1, loopStart: 16, loopLength: 8 });
    dev.send("mode", 2);
    dev.send("vocoder", 1);
    dev.send("bars", 4);
    dev.send("loop", 1);
    dev.send("fit_tempo", 1);
    dev.send("prompt", "house", "loop");
    dev.send("go");
    const o = dev.lastSubmit().options;
    assert.equal(o.vocoder, "mbd");
    assert.equal(o.bars, 4);
    assert.equal(o.loop, 1);
    assert.equal(o.fit_tempo, 1);
    assert.equal(o.duration, 0); // the server refuses duration with bars
    dev.send("cancel");
    dev.send("vocoder", "wavenet");
    assert.match(dev.lastStatus(), /Unknown vocoder/);
    dev.send("bars", 513);
    assert.match(dev.lastStatus(), /Bars must be/);
    return dev.close();
});

test("Clip melody: the selected MIDI clip's notes (get_notes_extended, beats -> seconds) go as midi_notes", () => {
    const { world, dev } = ready({ tempo: 120 });
    world.selectMidiClip([
        { pitch: 60, start_time: 0, duration: 1, velocity: 100, mute: 0 },
        { pitch: 64, start_time: 1, duration: 1, velocity: 90.4, mute: 0 },
        { pitch: 66, start_time: 1, duration: 1, velocity: 90, mute: 1 },    // muted: left out
        { pitch: 67, start_time: 3.5, duration: 2, velocity: 80, mute: 0 },  // cut at the end marker (4)
        { pitch: 72, start_time: 6, duration: 1, velocity: 80, mute: 0 },    // after the end marker
    ], { name: "hook", start_marker: 0, end_marker: 4 });
    dev.send("melody_clip", 1);
    assert.match(dev.lastStatus(), /Melody: 3 notes of the clip 'hook'/);
    assert.equal(calls(world, "get_notes_extended").length, 1);
    assert.deepEqual(calls(world, "get_notes_extended")[0].args, [0, 128, 0, 4]);
    dev.send("mode", 2);
    dev.send("prompt", "strings");
    // the notes go as an upload (/m2u/upload pieces), the submit names it once the bridge has it all
    const uploaded = () => {
        const pieces = dev.osc().filter((m) => m[0] === "/m2u/upload");
        const id = pieces[pieces.length - 1][1];
        const mine = pieces.filter((p) => p[1] === id).sort((a, b) => a[2] - b[2]);
        dev.receive("/m2u/uploaded", [id, 1]);
        return JSON.parse(mine.map((p) => p[4]).join("")).midi_notes;
    };
    dev.send("go");
    assert.deepEqual(uploaded(), [[0, 0.5, 60, 100], [0.5, 1, 64, 90], [1.75, 2, 67, 80]]);
    const o = dev.lastSubmit().options;
    assert.ok(o.upload && o.midi_notes === undefined && o.midi === undefined);
    dev.send("cancel");
    // another tempo: other seconds (the notes are in beats)
    world.song.values.tempo = 60;
    dev.send("go");
    assert.deepEqual(uploaded()[1], [1, 2, 64, 90]);
    dev.send("cancel");
    dev.send("melody_clip", 0);
    dev.send("go");
    assert.equal(dev.lastSubmit().options.upload, undefined);
    return dev.close();
});

test("Clip melody needs a MIDI clip; a dropped .mid is sent as the midi file instead", () => {
    const { world, dev } = ready({ tempo: 120 });
    world.selectAudioClip({ file_path: RESULT, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("melody_clip", 1);
    assert.match(dev.lastStatus(), /Select a MIDI clip first/);
    dev.send("media", "/Users/me/sketch.mid");
    dev.send("mode", 2);
    dev.send("prompt", "strings");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.midi, "/Users/me/sketch.mid");
    return dev.close();
});

test("transcribe: the audio clip -> /m2u/submit transcribe -> the notes as a new MIDI clip", async () => {
    const { world, dev } = ready({ tempo: 120, scenes: 4, selectedScene: 2 });
    world.selectAudioClip({ file_path: RESULT, start_marker: 0.5, end_marker: 2.5, warping: 0 }, { track: 0, slot: 0 });
    dev.send("transcribe");
    const sent = dev.lastSubmit();
    assert.equal(sent.kind, "transcribe");
    assert.deepEqual(sent.options, { audio: RESULT, start: 0.5, end: 2.5, bpm: 120, time_signature: [4, 4],
        dereverb: 1, results_dir: "user", reply_port: 9101, tag: sent.options.tag });
    const notes = [[0, 0.5, 60, 100, 0], [0.5, 1.25, 64, 90, 0], [0, 2, 48, 80, 1]];
    const text = JSON.stringify(notes);
    dev.receive("/m2u/accepted", ["t1", 0]);
    dev.receive("/m2u/progress", ["t1", 0.5, "transcribing"]);
    dev.receive("/m2u/notes", ["t1", 1, 2, text.slice(20)]);  // chunks in any order
    dev.receive("/m2u/notes", ["t1", 0, 2, text.slice(0, 20)]);
    const before = world.song.values.tracks.length;
    dev.receive("/m2u/done", ["t1", "/Users/me/Music/M2UGen/x.mid", 2.0, 0]);
    assert.equal(world.song.values.tracks.length, before, "nothing placed inside the /m2u/done handler");
    await settle(dev);
    // melody (channel 0) and chords (channel 1) each on a MIDI track right after the device's track (1)
    assert.deepEqual(calls(world, "create_midi_track").map((c) => c.args), [[2], [3]]);
    const track = world.song.values.tracks[2];
    assert.equal(track.values.has_midi_input, 1);
    const slot = track.values.clip_slots[2]; // the selected scene
    assert.equal(slot.values.has_clip, 1);
    assert.deepEqual(calls(world, "create_clip")[0].args, [4]); // 2 s at 120 bpm = 4 beats
    const clip = slot.values.clip;
    assert.deepEqual(clip.values.notes.map((n) => [n.pitch, n.start_time, n.duration, n.velocity]),
        [[60, 0, 1, 100], [64, 1, 1.5, 90]]);
    assert.equal(clip.values.name, "M2UGen melody t1");
    const chords = world.song.values.tracks[3].values.clip_slots[2].values.clip;
    assert.deepEqual(chords.values.notes.map((n) => [n.pitch, n.start_time, n.duration, n.velocity]), [[48, 0, 4, 80]]);
    assert.equal(chords.values.name, "M2UGen chords t1");
    assert.match(dev.lastStatus(), /Placed 2 melody notes and 1 chords notes on MIDI tracks 3-4 \(scene 3\)/);
    return dev.close();
});

test("the Dereverb toggle off sends transcribe's dereverb 0 (a dry DI piano)", async () => {
    const { world, dev } = ready({ tempo: 120 });
    world.selectAudioClip({ file_path: RESULT, start_marker: 0, end_marker: 2, warping: 0 }, { track: 0, slot: 0 });
    dev.send("dereverb", 0);
    dev.send("transcribe");
    assert.equal(dev.lastSubmit().options.dereverb, 0);
    return dev.close();
});

test("transcribe needs audio, and a clip that cannot be made leaves no empty track", async () => {
    const { world, dev } = ready({ tempo: 120 });
    dev.send("transcribe");
    assert.match(dev.lastStatus(), /Transcribe needs audio/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/submit").length, 0);
    world.selectAudioClip({ file_path: RESULT, start_marker: 0, end_marker: 2 }, { track: 0, slot: 0 });
    dev.send("transcribe");
    const before = world.song.values.tracks.length;
    dev.receive("/m2u/accepted", ["t2", 0]);
    dev.receive("/m2u/notes", ["t2", 0, 1, JSON.stringify([[0, 1, 200, 100, 0]])]); // a pitch Live refuses
    dev.receive("/m2u/done", ["t2", "/tmp/x.mid", 1.0, 0]);
    await settle(dev);
    assert.equal(world.song.values.tracks.length, before);
    assert.match(dev.lastStatus(), /Live could not make the MIDI clip .*x\.mid/);
    return dev.close();
});

// ---- personal adapters: learn (a finetune job through the bridge's /m2u/learn), adapter -----------

test("learn sends the dropped audio files to /m2u/learn with the adapter's name and the reply port", async () => {
    const { dev } = ready();
    dev.send("learn_file", "/Users/me/loops/a.wav");
    dev.send("learn_file", "/Users/me/loops/b.aif");
    dev.send("learn_file", "/Users/me/loops/a.wav"); // once
    dev.send("learn_file", "/Users/me/Pictures/cat.png");
    assert.match(dev.lastStatus(), /Learn takes audio files/);
    dev.send("learn_name", "bad name");
    dev.send("learn");
    assert.match(dev.lastStatus(), /name the adapter/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/learn").length, 0);
    dev.send("learn_name", "my_style");
    dev.send("learn");
    const sent = dev.lastSubmit();
    assert.equal(sent.kind, "finetune");
    assert.deepEqual([sent.options.adapter_name, sent.options.clip, sent.options.reply_port],
        ["my_style", ["/Users/me/loops/a.wav", "/Users/me/loops/b.aif"], 9101]);
    const learnStatus = () => String(dev.ui("learn_status").pop()[0]);
    assert.match(learnStatus(), /Learning adapter my_style from 2 file/);
    dev.receive("/m2u/accepted", ["ft1", 0, sent.options.tag]);
    dev.receive("/m2u/progress", ["ft1", 0.25, "training"]);
    assert.match(learnStatus(), /training 25%/);
    dev.receive("/m2u/done", ["ft1", "", 0, 0]);
    await settle(dev);
    assert.match(learnStatus(), /Adapter my_style learnt/);
    assert.equal(dev.osc().filter((m) => m[0] === "/m2u/submit").length, 1); // nothing was placed or submitted after it
    dev.send("learn_clear");
    dev.send("learn");
    assert.match(dev.lastStatus(), /drop audio files on the learn area, or select an audio clip/);
    return dev.close();
});

test("learn without dropped files uses the selected audio clip's file", () => {
    const { world, dev } = ready();
    world.selectAudioClip({ file_path: "/Users/me/loops/drums.wav", warping: 0, start_marker: 0, end_marker: 2 }, { track: 0 });
    dev.send("learn", "drums");
    const o = dev.lastSubmit().options;
    assert.deepEqual([o.adapter_name, o.clip], ["drums", "/Users/me/loops/drums.wav"]);
    return dev.close();
});

test("the adapter goes with every ask / edit / generate; empty is the base model", () => {
    const { dev } = ready();
    dev.send("mode", "generate");
    dev.send("prompt", "lofi");
    dev.send("adapter", "my style");
    assert.match(dev.lastStatus(), /Adapter: 1 to 64/);
    dev.send("adapter", "my_style");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.adapter, "my_style");
    assert.match(dev.lastStatus(), /adapter my_style/);
    dev.send("cancel");
    dev.send("adapter");
    dev.send("go");
    assert.equal(dev.lastSubmit().options.adapter, undefined);
    return dev.close();
});
