// m2ugen_device.js -- the logic of the M2UGen Max for Live device.
//
// Runs in Max's [js] object (SpiderMonkey 1.8.5: plain ES5, no let/const/arrows/template strings).
// The patch (M2UGen.maxpat) wires it like this:
//   inlet  0 <- UI messages (mode, prompt, duration, conditioning, host, port, reply_port, go, cancel,
//               rec, ping, init) and OSC events from [udpreceive] ("/m2u/done job path seconds sr" ...)
//   outlet 0 -> [udpsend]     OSC requests ("/m2u/generate prompt 8") and "host h" / "port p"
//   outlet 1 -> [udpreceive]  "port p" (the reply port this device listens on)
//   outlet 2 -> UI            "status text", "progress f", "answer text", "busy 0|1"
//   outlet 3 -> recorder      "record 1|0" -> [record~], "buffer clear|writewave path" -> [buffer~]
//
// The same file loads under node for tests: every Max global (LiveAPI, Task, outlet, post,
// messnamed, max, this.patcher) is reached through `env`, which setEnv() replaces.

var IN_MAX = (typeof module === "undefined");
if (IN_MAX) {
    inlets = 1;
    outlets = 4;
    autowatch = 0;
}

var OUT_OSC = 0;
var OUT_RECEIVER = 1;
var OUT_UI = 2;
var OUT_RECORDER = 3;

var MODES = ["ask", "edit", "generate"];
var CONDITIONINGS = ["text", "embedding"];
var CAPTURE_SECONDS = 60;      // size of the [buffer~ m2u_capture] in the patch
var ACCEPT_TIMEOUT_MS = 5000;  // no /m2u/accepted or /m2u/error by then: the bridge is not there
var STATUS_POLL_MS = 15000;    // a running job silent this long: ask /m2u/status (UDP may drop its outcome)
var ARRANGEMENT_MAX_BEATS = 1576800;

var JS_THIS = this;
var env = null;

// ------------------------------------------------------------------------------------------------
// environment: Max globals, or whatever a test passes to setEnv()

function maxEnv() {
    return {
        LiveAPI: LiveAPI,
        Task: Task,
        outlet: function (index, atoms) { outlet.apply(JS_THIS, [index].concat(atoms)); },
        post: function (text) { post(text + "\n"); },
        messnamed: messnamed,
        os: max.os,  // "macintosh" | "windows"
        patcherPath: JS_THIS.patcher ? JS_THIS.patcher.filepath : ""
    };
}

function setEnv(e) {
    env = e;
    resetState();
}

// ------------------------------------------------------------------------------------------------
// state

var settings = null;
var state = null;

function resetState() {
    settings = {
        mode: "generate",
        prompt: "",
        duration: 0,            // seconds; 0 = automatic (loop brace for generate, region for edit)
        conditioning: "text",
        host: "127.0.0.1",
        port: 9100,             // the bridge
        replyPort: 9101,        // where this device listens
        captureDir: ""          // "" = the folder of the device file
    };
    state = {
        ready: false,           // live.thisdevice has banged: the LOM may be used
        job: "",                // id of the job this device waits for
        kind: "",
        pending: null,          // request sent, no /m2u/accepted yet
        watchdog: null,
        poll: null,             // Task asking /m2u/status while the job is silent
        lastEventMs: 0,
        request: null,          // what the running job needs to place its result
        chunks: null,           // /m2u/text pieces of the current job
        recording: null,        // {startedMs, startBeat} while [record~] runs
        capture: null,          // {path, seconds, startBeat} of the last recording
        placed: []              // results placed in the Set (for the status line and tests)
    };
}

// ------------------------------------------------------------------------------------------------
// small helpers

function first(v) {
    if (v instanceof Array) return v.length ? v[0] : undefined;
    return v;
}

function num(v) {
    return Number(first(v));
}

function str(v) {
    if (v instanceof Array) return v.join(" ");
    return v === undefined || v === null ? "" : String(v);
}

function joinAtoms(args) {
    var parts = [];
    for (var i = 0; i < args.length; i++) parts.push(String(args[i]));
    return parts.join(" ");
}

function round3(x) {
    return Math.round(x * 1000) / 1000;
}

function log(text) {
    if (env && env.post) env.post("M2UGen: " + text);
}

function ui(name, atoms) {
    env.outlet(OUT_UI, [name].concat(atoms));
}

function setStatus(text) {
    ui("status", [text]);
    log(text);
}

function sendOsc(address, args) {
    env.outlet(OUT_OSC, [address].concat(args || []));
}

function defer(fn, ms) {
    // Max's Task runs fn later from the low-priority queue: never inside a LOM notification.
    var task = new env.Task(fn, JS_THIS);
    task.schedule(ms || 0);
    return task;
}

function live(path) {
    return new env.LiveAPI(path);
}

function unquotedPath(api) {
    if (api.unquotedpath !== undefined) return String(api.unquotedpath);
    return String(api.path).replace(/"/g, "");
}

// Canonical path ("live_set tracks 2") of whatever `path` points to ("this_device canonical_parent"):
// a LiveAPI made from an id reports the canonical path; "" when nothing is there.
function canonicalPath(path) {
    var api = live(path);
    if (!api || num(api.id) === 0) return "";
    return unquotedPath(live("id " + api.id));
}

// ------------------------------------------------------------------------------------------------
// pure functions (exported for tests)

// Live 11.3.25+ and 12.0.5+ have Track.create_audio_clip / ClipSlot.create_audio_clip.
function supportsAudioClipImport(major, minor, bugfix) {
    if (major > 12) return true;
    if (major === 12) return minor > 0 || bugfix >= 5;
    if (major === 11) return minor > 3 || (minor === 3 && bugfix >= 25);
    return false;
}

// Index of the track in a LOM path like "live_set tracks 3" or "live_set tracks 3 devices 0 chains 1";
// -1 for return tracks, the master track or anything else.
function trackIndexFromPath(path) {
    var m = /^live_set tracks (\d+)(\s|$)/.exec(path);
    return m ? parseInt(m[1], 10) : -1;
}

function sceneIndexFromPath(path) {
    var m = /^live_set scenes (\d+)$/.exec(path);
    return m ? parseInt(m[1], 10) : 0;
}

// Clip beats -> seconds of the audio file.
// Warped clips: piecewise-linear through the warp markers (beat_time -> sample_time, seconds),
// extended past the ends with the first/last segment; with fewer than two markers, at the song
// tempo (60 / bpm seconds per beat). Unwarped clips: markers already are seconds.
function beatsToFileSeconds(beats, warping, warpMarkers, tempo) {
    if (!warping) return beats;
    var m = warpMarkers || [];
    if (m.length >= 2) {
        var i = 1;
        while (i < m.length - 1 && beats > m[i].beat_time) i++;
        var a = m[i - 1], b = m[i];
        var slope = (b.sample_time - a.sample_time) / (b.beat_time - a.beat_time);
        return a.sample_time + (beats - a.beat_time) * slope;
    }
    if (!(tempo > 0)) throw new Error("song tempo is not positive: " + tempo);
    return beats * 60.0 / tempo;
}

// "Macintosh HD:/Users/me/x.wav" (Max path) -> "/Users/me/x.wav"; "Data:/x" -> "/Volumes/Data/x".
// Windows Max paths ("C:/Users/me/x.wav") are already native.
function maxPathToNative(path, os) {
    if (os === "windows") return path;
    var m = /^([^\/:]+):(\/.*)$/.exec(path);
    if (!m) return path;
    if (/^\/(Users|Volumes|private|tmp|var|Applications|Library|System|opt|home)(\/|$)/.test(m[2])) {
        return m[2];
    }
    return "/Volumes/" + m[1] + m[2];
}

function dirname(path) {
    var i = path.lastIndexOf("/");
    return i > 0 ? path.substring(0, i) : path;
}

function fileUrl(path) {
    return "file://" + encodeURI(path.charAt(0) === "/" ? path : "/" + path);
}

// ------------------------------------------------------------------------------------------------
// messages from the patch (one function per message name, as Max's [js] dispatches them)

function init() {
    state.ready = true;
    configureNetwork();
    hello();
    setStatus("Ready: " + settings.mode + " mode, bridge " + settings.host + ":" + settings.port);
}

function mode(v) {
    var m = typeof v === "number" ? MODES[v] : String(v);
    if (MODES.indexOf(m) < 0) {
        setStatus("Unknown mode '" + v + "': use ask, edit or generate");
        return;
    }
    settings.mode = m;
}

function prompt() {
    settings.prompt = joinAtoms(arguments).replace(/^\s+|\s+$/g, "");
}

function duration(v) {
    var d = Number(v);
    if (!(d >= 0 && d <= 300)) {
        setStatus("Duration must be 0 (automatic) to 300 seconds, got " + v);
        return;
    }
    settings.duration = d;
}

function conditioning(v) {
    var c = typeof v === "number" ? CONDITIONINGS[v] : String(v);
    if (CONDITIONINGS.indexOf(c) < 0) {
        setStatus("Unknown conditioning '" + v + "': use text or embedding");
        return;
    }
    settings.conditioning = c;
}

function host() {
    var h = joinAtoms(arguments).replace(/\s+/g, "");
    if (!h) {
        setStatus("Server host is empty");
        return;
    }
    settings.host = h;
    if (state.ready) configureNetwork();
}

function validPort(p) {
    return p === Math.floor(p) && p >= 1 && p <= 65535;
}

function port(p) {
    p = Number(p);
    if (!validPort(p)) {
        setStatus("Bridge port must be 1..65535, got " + p);
        return;
    }
    settings.port = p;
    if (state.ready) configureNetwork();
}

function reply_port(p) {
    p = Number(p);
    if (!validPort(p)) {
        setStatus("Reply port must be 1..65535, got " + p);
        return;
    }
    settings.replyPort = p;
    if (state.ready) {
        configureNetwork();
        hello();
    }
}

function capture_dir() {
    settings.captureDir = joinAtoms(arguments);
}

function configureNetwork() {
    env.outlet(OUT_OSC, ["host", settings.host]);
    env.outlet(OUT_OSC, ["port", settings.port]);
    env.outlet(OUT_RECEIVER, ["port", settings.replyPort]);
}

function hello() {
    sendOsc("/m2u/hello", [settings.replyPort]);
}

function ping() {
    sendOsc("/m2u/ping", [settings.replyPort]);
}

// ------------------------------------------------------------------------------------------------
// reading the Set

function songContext() {
    var song = live("live_set");
    var ctx = {
        tempo: num(song.get("tempo")),
        numerator: num(song.get("signature_numerator")),
        denominator: num(song.get("signature_denominator")),
        loopOn: num(song.get("loop")) === 1,
        loopStart: num(song.get("loop_start")),
        loopLength: num(song.get("loop_length")),
        songTime: num(song.get("current_song_time"))
    };
    return ctx;
}

// The selected clip as an audio region, or null when no audio clip is selected.
function selectedClipRegion(ctx) {
    var clip = live("live_set view detail_clip");
    if (!clip || num(clip.id) === 0) return null;
    if (num(clip.get("is_audio_clip")) !== 1) return null;
    var path = str(clip.get("file_path"));
    if (!path) return null;
    var warping = num(clip.get("warping")) === 1;
    var markers = [];
    if (warping) {
        // M4L returns warp_markers as a JSON dict: {"warp_markers": [{"sample_time", "beat_time"}, ...]}
        try {
            var parsed = JSON.parse(str(clip.get("warp_markers")));
            markers = parsed.warp_markers || [];
        } catch (e) {
            markers = [];
        }
    }
    var start = beatsToFileSeconds(num(clip.get("start_marker")), warping, markers, ctx.tempo);
    var end = beatsToFileSeconds(num(clip.get("end_marker")), warping, markers, ctx.tempo);
    var region = {
        path: path,
        start: Math.max(0, round3(start)),
        end: Math.max(0, round3(end)),
        source: "clip",
        positionBeats: null
    };
    if (num(clip.get("is_arrangement_clip")) === 1) region.positionBeats = num(clip.get("start_time"));
    if (!(region.end > region.start)) throw new Error("the selected clip's end marker is not after its start marker");
    return region;
}

function audioInput(ctx) {
    var region = selectedClipRegion(ctx);
    if (region) return region;
    if (state.capture) {
        return {
            path: state.capture.path,
            start: 0,
            end: round3(state.capture.seconds),
            source: "recording",
            positionBeats: state.capture.startBeat
        };
    }
    return null;
}

// ------------------------------------------------------------------------------------------------
// Go / Cancel

function go() {
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (state.job || state.pending) {
        setStatus("A job is running (" + (state.job || "sent") + "): wait or press Cancel");
        return;
    }
    if (!settings.prompt) {
        setStatus("Type a prompt first");
        return;
    }
    var ctx, input = null;
    try {
        ctx = songContext();
        if (settings.mode !== "generate") {
            input = audioInput(ctx);
            if (!input) {
                setStatus(settings.mode + " needs audio: select an audio clip or record with Rec");
                return;
            }
        }
    } catch (e) {
        setStatus("Could not read the Set: " + e.message);
        return;
    }

    var position;
    if (input && input.positionBeats !== null) position = input.positionBeats;
    else if (ctx.loopOn) position = ctx.loopStart;
    else position = ctx.songTime;

    var dur = settings.duration;
    if (dur === 0 && settings.mode === "generate" && ctx.loopOn && ctx.tempo > 0) {
        dur = Math.min(300, round3(ctx.loopLength * 60.0 / ctx.tempo));
    }

    // musical context and options travel as per-client settings of the bridge
    hello();
    sendOsc("/m2u/set", ["bpm", ctx.tempo, settings.replyPort]);
    sendOsc("/m2u/set", ["time_signature", ctx.numerator, ctx.denominator, settings.replyPort]);
    sendOsc("/m2u/set", ["conditioning", settings.conditioning, settings.replyPort]);

    if (settings.mode === "generate") {
        sendOsc("/m2u/generate", [settings.prompt, dur, settings.replyPort]);
    } else if (settings.mode === "edit") {
        sendOsc("/m2u/edit", [settings.prompt, input.path, input.start, input.end, dur, settings.replyPort]);
    } else {
        sendOsc("/m2u/ask", [settings.prompt, input.path, input.start, input.end, settings.replyPort]);
    }

    state.kind = settings.mode;
    state.pending = { sentMs: new Date().getTime() };
    state.request = {
        kind: settings.mode,
        prompt: settings.prompt,
        positionBeats: Math.max(0, Math.min(ARRANGEMENT_MAX_BEATS, position))
    };
    state.chunks = null;
    ui("busy", [1]);
    ui("progress", [0]);
    ui("answer", [""]);
    setStatus("Sent " + settings.mode + (input ? " (" + input.source + " " + input.start + "-" + input.end + " s)" : "") +
        " to " + settings.host + ":" + settings.port);
    state.watchdog = defer(acceptTimeout, ACCEPT_TIMEOUT_MS);
}

function acceptTimeout() {
    state.watchdog = null;
    if (!state.pending) return;
    state.pending = null;
    state.request = null;
    ui("busy", [0]);
    setStatus("No answer from the bridge at " + settings.host + ":" + settings.port +
        " (is `m2ugen bridge` running, reply port " + settings.replyPort + " free?)");
}

function cancel() {
    if (state.job) {
        sendOsc("/m2u/cancel", [state.job, settings.replyPort]);
        setStatus("Cancelling " + state.job);
    } else if (state.pending) {
        sendOsc("/m2u/cancel", ["last", settings.replyPort]);
        setStatus("Cancelling the last request");
    } else {
        setStatus("Nothing to cancel");
    }
}

function finishJob() {
    if (state.watchdog) {
        state.watchdog.cancel();
        state.watchdog = null;
    }
    if (state.poll) {
        state.poll.cancel();
        state.poll = null;
    }
    state.job = "";
    state.pending = null;
    ui("busy", [0]);
}

// ------------------------------------------------------------------------------------------------
// recording (no clip selected): [plugin~] -> [record~ m2u_capture 2] -> buffer~ -> writewave

function rec(on) {
    on = Number(on) ? 1 : 0;
    if (on) {
        if (state.recording) return;
        var startBeat = 0;
        try {
            startBeat = num(live("live_set").get("current_song_time"));
        } catch (e) {
            startBeat = 0;
        }
        env.outlet(OUT_RECORDER, ["buffer", "clear"]);
        env.outlet(OUT_RECORDER, ["record", 1]);
        state.recording = { startedMs: new Date().getTime(), startBeat: startBeat };
        setStatus("Recording the track (up to " + CAPTURE_SECONDS + " s)...");
        return;
    }
    if (!state.recording) return;
    env.outlet(OUT_RECORDER, ["record", 0]);
    var seconds = Math.min(CAPTURE_SECONDS, (new Date().getTime() - state.recording.startedMs) / 1000.0);
    var dir = settings.captureDir || dirname(env.patcherPath || "");
    if (!dir) {
        state.recording = null;
        setStatus("Cannot save the recording: set a capture folder (capture_dir) first");
        return;
    }
    var maxPath = dir + "/m2ugen-capture-" + new Date().getTime() + ".wav";
    env.outlet(OUT_RECORDER, ["buffer", "writewave", maxPath]);
    state.capture = { path: maxPathToNative(maxPath, env.os), seconds: seconds, startBeat: state.recording.startBeat };
    state.recording = null;
    setStatus("Recorded " + round3(seconds) + " s: used when no audio clip is selected");
}

// ------------------------------------------------------------------------------------------------
// OSC events from [udpreceive]

function anything() {
    var args = Array.prototype.slice.call(arguments);
    handleOsc(messagename, args);
}

function pollStatus() {
    state.poll = null;
    if (!state.job) return;
    var now = new Date().getTime();
    if (now - state.lastEventMs >= STATUS_POLL_MS) {
        sendOsc("/m2u/status", [state.job, settings.replyPort]);
        state.lastEventMs = now;
    }
    state.poll = defer(pollStatus, STATUS_POLL_MS);
}

function handleOsc(address, args) {
    var job = args.length ? String(args[0]) : "";
    if (job && job === state.job) state.lastEventMs = new Date().getTime();
    if (address === "/m2u/welcome") {
        if (args[1] === "up") {
            setStatus("Connected: " + args[3] + (Number(args[4]) ? " (tiny test model)" : "") + ", bridge " + args[0]);
        } else {
            setStatus("Bridge " + args[0] + " is up but the M2UGen server is down: start `m2ugen serve`");
        }
    } else if (address === "/m2u/pong") {
        setStatus("Bridge " + args[0] + ", server " + args[1]);
    } else if (address === "/m2u/server") {
        setStatus("Server " + args[0] + (args[1] ? ": " + args[1] : ""));
    } else if (address === "/m2u/accepted") {
        if (!state.pending) return;
        if (state.watchdog) {
            state.watchdog.cancel();
            state.watchdog = null;
        }
        state.pending = null;
        state.job = job;
        state.lastEventMs = new Date().getTime();
        state.poll = defer(pollStatus, STATUS_POLL_MS);
        setStatus(Number(args[1]) > 0 ? "Queued at position " + args[1] : "Running " + state.kind);
    } else if (address === "/m2u/queued") {
        if (job === state.job) setStatus("Queued at position " + args[1]);
    } else if (address === "/m2u/progress") {
        if (job !== state.job) return;
        ui("progress", [Math.max(0, Math.min(1, Number(args[1])))]);
        setStatus(args[2] + " " + Math.round(100 * Number(args[1])) + "%");
    } else if (address === "/m2u/text") {
        if (job !== state.job) return;
        onTextChunk(Number(args[1]), Number(args[2]), args.length > 3 ? String(args[3]) : "");
    } else if (address === "/m2u/done") {
        if (job !== state.job) return;
        onDone(String(args[1] || ""), Number(args[2]), Number(args[3]));
    } else if (address === "/m2u/error") {
        if (job !== "" && job !== state.job) return;
        if (job === "" && !state.pending && !state.job) {
            setStatus("Bridge error " + args[1] + ": " + args[2]);
            return;
        }
        finishJob();
        state.request = null;
        setStatus("Error " + args[1] + ": " + args[2]);
    } else if (address === "/m2u/cancelled") {
        if (job !== state.job) return;
        finishJob();
        state.request = null;
        setStatus("Cancelled " + job);
    } else if (address === "/m2u/status") {
        // reply to a poll: job state fraction stage queue_pos (a finished job's outcome follows by itself)
        if (job !== state.job) return;
        if (args[1] === "queued") setStatus("Queued at position " + args[4]);
        else if (args[1] === "running") ui("progress", [Math.max(0, Math.min(1, Number(args[2])))]);
    }
    // /m2u/set echoes need no action
}

function onTextChunk(index, count, chunk) {
    if (!state.chunks || state.chunks.count !== count) state.chunks = { count: count, parts: [] };
    state.chunks.parts[index] = chunk;
    for (var i = 0; i < count; i++) {
        if (state.chunks.parts[i] === undefined) return;
    }
    ui("answer", [state.chunks.parts.join("")]);
}

function onDone(path, seconds, sampleRate) {
    var request = state.request;
    finishJob();
    state.request = null;
    ui("progress", [1]);
    if (!path) {
        setStatus("Answer ready");
        return;
    }
    // Never touch the Set from the handler that received the event: place it from a Task.
    defer(function () {
        placeResult(path, seconds, request);
    }, 0);
    setStatus("Done: " + round3(seconds) + " s at " + sampleRate + " Hz, placing it...");
}

// ------------------------------------------------------------------------------------------------
// placing the result: a new audio track right after the device's track, then the clip

function liveVersion() {
    var app = live("live_app");
    return {
        major: num(app.call("get_major_version")),
        minor: num(app.call("get_minor_version")),
        bugfix: num(app.call("get_bugfix_version"))
    };
}

function revealFile(path, why) {
    env.messnamed("max", "launchbrowser", fileUrl(dirname(path)));
    setStatus(why + " Drag the file in by hand: " + path);
}

function placeResult(path, seconds, request) {
    var v;
    try {
        v = liveVersion();
    } catch (e) {
        revealFile(path, "Could not read Live's version (" + e.message + ").");
        return false;
    }
    if (!supportsAudioClipImport(v.major, v.minor, v.bugfix)) {
        revealFile(path, "Live " + v.major + "." + v.minor + "." + v.bugfix +
            " cannot import audio from a device (needs 11.3.25+ or 12.0.5+).");
        return false;
    }

    var song = live("live_set");
    var deviceTrack = trackIndexFromPath(canonicalPath("this_device canonical_parent"));
    var trackCount = num(song.getcount("tracks"));
    var index = deviceTrack >= 0 ? deviceTrack + 1 : trackCount;
    var arranger = str(live("live_app view").get("focused_document_view")) === "Arranger";

    try {
        song.call("create_audio_track", index);
    } catch (e) {
        setStatus("Could not create a track: " + e.message + ". File: " + path);
        return false;
    }
    if (num(song.getcount("tracks")) !== trackCount + 1) {
        setStatus("Live did not create the track. File: " + path);
        return false;
    }
    var trackPath = "live_set tracks " + index;
    var track = live(trackPath);
    var clipPath = null;
    var failure = "";
    try {
        if (arranger) {
            var before = num(track.getcount("arrangement_clips"));
            track.call("create_audio_clip", path, request ? request.positionBeats : 0);
            if (num(track.getcount("arrangement_clips")) === before + 1) {
                clipPath = trackPath + " arrangement_clips " + before;
            }
        } else {
            var scene = sceneIndexFromPath(canonicalPath("live_set view selected_scene"));
            var slot = live(trackPath + " clip_slots " + scene);
            slot.call("create_audio_clip", path);
            if (num(slot.get("has_clip")) === 1) clipPath = trackPath + " clip_slots " + scene + " clip";
        }
    } catch (e) {
        failure = e.message;
    }
    if (!clipPath) {
        // nothing half-created: remove the empty track again
        try {
            song.call("delete_track", index);
        } catch (e2) {
            log("could not delete the empty track " + index + ": " + e2.message);
        }
        setStatus("Live could not import the result" + (failure ? " (" + failure + ")" : "") + ". File: " + path);
        return false;
    }
    var label = "M2UGen " + (request ? request.kind + ": " + request.prompt : "result");
    track.set("name", label.substring(0, 60));
    var clip = live(clipPath);
    clip.set("warping", 0);
    clip.set("name", label.substring(0, 60));
    state.placed.push({ path: path, track: index, clip: clipPath, arrangement: arranger });
    setStatus("Placed on track " + (index + 1) + (arranger ? " at beat " + round3(request ? request.positionBeats : 0) : " (session)") +
        ": " + round3(seconds) + " s");
    return true;
}

// ------------------------------------------------------------------------------------------------

if (IN_MAX) {
    env = maxEnv();
    resetState();
} else {
    module.exports = {
        setEnv: setEnv,
        settings: function () { return settings; },
        state: function () { return state; },
        init: init, mode: mode, prompt: prompt, duration: duration, conditioning: conditioning,
        host: host, port: port, reply_port: reply_port, capture_dir: capture_dir,
        go: go, cancel: cancel, rec: rec, ping: ping,
        handleOsc: handleOsc, placeResult: placeResult,
        supportsAudioClipImport: supportsAudioClipImport,
        trackIndexFromPath: trackIndexFromPath,
        beatsToFileSeconds: beatsToFileSeconds,
        maxPathToNative: maxPathToNative
    };
}
