// m2ugen_device.js -- the logic of the M2UGen Max for Live device.
//
// Runs in Max's [js] object (SpiderMonkey 1.8.5: plain ES5, no let/const/arrows/template strings).
// The patch (M2UGen.maxpat) wires it like this:
//   inlet  0 <- UI messages (mode, prompt, duration, seed, takes, gen_mode, preview, conditioning, host,
//               port, reply_port, go, cancel, accept, regenerate, discard, play, rec, media, media_clear,
//               refresh_jobs, pick_job, reinsert, sample_rate, ping, init, bars, loop, fit_tempo, vocoder,
//               melody_clip, transcribe) and OSC events from
//               [udpreceive 0 @defer 1] ("/m2u/done job path seconds sr" ...)
//   outlet 0 -> [udpsend]     OSC requests ("/m2u/submit generate prompt ...") and "host h" / "port p"
//   outlet 1 -> [udpreceive]  "port p" (the reply port this device listens on)
//   outlet 2 -> UI            "status text", "progress f", "answer text", "analysis text", "busy 0|1",
//                             "media text", "jobs_menu clear|append label"
//   outlet 3 -> audio         "record 1|0" -> [record~], "buffer size|clear|crop|writewave ..." -> [buffer~],
//                             "preview open path|1|0" -> [sfplay~ 2], "dsp bang" -> [dspstate~]
//
// The same file loads under node for tests: every Max global (LiveAPI, Task, Global, outlet, post,
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
var OUT_AUDIO = 3;

var MODES = ["ask", "edit", "generate"];
var GEN_MODES = ["text", "continue", "melody"];   // the server's params.mode
var CONDITIONINGS = ["text", "embedding"];
var VOCODERS = ["encodec", "mbd"];               // the server's params.vocoder
var MIDI_EXTENSIONS = [".mid", ".midi"];
var MAX_BARS = 512;
var IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"];
var VIDEO_EXTENSIONS = [".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"];
var AUDIO_EXTENSIONS = [".wav", ".aif", ".aiff", ".flac", ".mp3", ".ogg", ".m4a"];
var ADAPTER_NAME = /^[A-Za-z0-9_-]{1,64}$/;   // the server's rule for adapter names
var MAX_LEARN_FILES = 64;
var CAPTURE_SECONDS = 60;      // size of the [buffer~ m2u_capture] in the patch
var ACCEPT_TIMEOUT_MS = 5000;  // no /m2u/accepted or /m2u/error by then: the bridge is not there
var STATUS_POLL_MS = 15000;    // a running job silent this long: ask /m2u/status (UDP may drop its outcome)
var MAX_UNANSWERED_POLLS = 3;  // that many status requests without any reply: the bridge is gone
var REPLY_PORT_FIRST = 9101;   // automatic reply ports: the lowest one no other M2UGen device holds
var REPLY_PORT_LAST = 9199;
var MAX_TAKES = 8;
var JOB_LIST_LENGTH = 20;
var RESULTS_SUBFOLDER = "Samples/M2UGen";   // next to the Set, where Live keeps a project's samples
var ARRANGEMENT_MAX_BEATS = 1576800;

var JS_THIS = this;
var env = null;

// ------------------------------------------------------------------------------------------------
// environment: Max globals, or whatever a test passes to setEnv()

function maxEnv() {
    return {
        LiveAPI: LiveAPI,
        Task: Task,
        Global: Global,
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
        seed: -1,               // -1 = random
        takes: 1,               // variations per request (1..8)
        genMode: "text",        // text | continue | melody (the server's params.mode)
        preview: 1,             // 1 = play the result first: Accept / Regenerate / Discard
        conditioning: "text",
        host: "127.0.0.1",
        port: 9100,             // the bridge
        replyPort: 0,           // where this device listens; 0 = automatic (one free port per device)
        captureDir: "",         // "" = the folder the bridge names in /m2u/welcome (cleaned up there)
        media: "",              // image or video dropped on the device (generate)
        sampleRate: 0,          // Live's sample rate from [dspstate~]; 0 = not known yet
        vocoder: "encodec",     // encodec | mbd (the server's params.vocoder)
        bars: 0,                // output length in bars; 0 = not set (duration / automatic)
        loop: 0,                // 1 = a seamless loop of exact length
        fitTempo: 0,            // 1 = the result stretched to the Set's tempo
        melodyNotes: null,      // the notes of a MIDI clip (Clip melody): [[start_s, end_s, pitch, velocity]]
        midiFile: "",           // a .mid dropped on the device: the melody (generate / edit)
        adapter: "",            // the server's adapter ask/edit/generate use; "" = the base model
        learnName: "mine",      // the name "learn" gives the adapter it trains
        learnFiles: []          // audio files dropped on the learn area
    };
    state = {
        ready: false,           // live.thisdevice has banged: the LOM may be used
        token: "m2u-" + new Date().getTime() + "-" + Math.floor(Math.random() * 1e9),
        port: 0,                // the reply port in use
        job: "",                // id of the job this device waits for
        kind: "",
        pending: null,          // request sent, no /m2u/accepted yet
        watchdog: null,
        poll: null,             // Task asking /m2u/status while the job is silent
        lastEventMs: 0,
        unanswered: 0,          // status requests since the bridge last said anything
        request: null,          // what the running job needs to place its result (and to regenerate)
        chunks: null,           // /m2u/text pieces of the current job
        noteChunks: null,       // /m2u/notes pieces of the current transcription
        takes: [],              // /m2u/take of the current job: {path, seed}
        analysis: {},           // /m2u/analysis summaries of the current job: input, result
        preview: null,          // {paths, seeds, seconds, request, current} waiting for Accept/Discard
        bridgeCaptureDir: "",   // from /m2u/welcome
        recording: null,        // {startedMs, startBeat} while [record~] runs
        capture: null,          // {path, seconds, startBeat} of the last recording
        jobs: [],               // the job list from /m2u/jobs: {job, kind, state, prompt, seconds, created}
        pickedJob: -1,
        lastRequest: null,      // for Regenerate after Accept
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
    var i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
    return i > 0 ? path.substring(0, i) : path;
}

function extension(path) {
    var m = /\.[A-Za-z0-9]+$/.exec(path);
    return m ? m[0].toLowerCase() : "";
}

// "image" | "video" | "" by the file's extension (the bridge's lists)
function mediaKind(path) {
    var ext = extension(path);
    if (IMAGE_EXTENSIONS.indexOf(ext) >= 0) return "image";
    if (VIDEO_EXTENSIONS.indexOf(ext) >= 0) return "video";
    return "";
}

// A native path written the way Max objects take it (forward slashes also on Windows).
function forMax(path) {
    return String(path).replace(/\\/g, "/");
}

// Where results go: <Set folder>/Samples/M2UGen when the Set is saved, else "user" (the bridge's
// own user folder). Never the server's jobs folder.
function resultsFolder(setPath) {
    if (!setPath) return "user";
    var sep = setPath.indexOf("\\") >= 0 && setPath.indexOf("/") < 0 ? "\\" : "/";
    return dirname(setPath) + sep + RESULTS_SUBFOLDER.replace("/", sep);
}

// Reply ports held by M2UGen devices in this Max (a Global shared by every [js]): "port:token,..."
function heldPorts() {
    var g = new env.Global("m2ugen_reply_ports");
    var held = {};
    var list = g.held ? String(g.held).split(",") : [];
    for (var i = 0; i < list.length; i++) {
        var kv = list[i].split(":");
        if (kv.length === 2) held[kv[0]] = kv[1];
    }
    return { global: g, held: held };
}

function storePorts(registry) {
    var parts = [];
    for (var p in registry.held) {
        if (registry.held.hasOwnProperty(p)) parts.push(p + ":" + registry.held[p]);
    }
    registry.global.held = parts.join(",");
}

// The reply port of this device: the one set by hand, else the lowest free one of 9101..9199.
function claimReplyPort() {
    var registry = heldPorts();
    var port = settings.replyPort;
    if (!port) {
        for (var p = REPLY_PORT_FIRST; p <= REPLY_PORT_LAST; p++) {
            var owner = registry.held[String(p)];
            if (!owner || owner === state.token) {
                port = p;
                break;
            }
        }
        if (!port) port = REPLY_PORT_LAST;
    }
    releaseReplyPort(registry);
    registry.held[String(port)] = state.token;
    storePorts(registry);
    state.port = port;
    return port;
}

function releaseReplyPort(registry) {
    var r = registry || heldPorts();
    for (var p in r.held) {
        if (r.held.hasOwnProperty(p) && r.held[p] === state.token) delete r.held[p];
    }
    if (!registry) storePorts(r);
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
    env.outlet(OUT_AUDIO, ["dsp", "bang"]);   // [dspstate~] answers with Live's sample rate
    setStatus("Ready: " + settings.mode + " mode, bridge " + settings.host + ":" + settings.port +
        ", replies on port " + state.port);
}

// Max calls this when the device is deleted: give the reply port back.
function notifydeleted() {
    releaseReplyPort();
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

// A whole-number setting from a control: stored when in lo..hi, else the status says why (`what`).
function setWhole(name, v, lo, hi, what) {
    var n = Number(v);
    if (!(n === Math.floor(n) && n >= lo && n <= hi)) {
        setStatus(what + ", got " + v);
        return;
    }
    settings[name] = n;
}

// A menu setting: a live.menu index or the name itself; stored when it is one of `choices`.
function setChoice(name, v, choices, unknown) {
    var c = typeof v === "number" ? choices[v] : String(v);
    if (choices.indexOf(c) < 0) {
        setStatus(unknown);
        return;
    }
    settings[name] = c;
}

function seed(v) {
    setWhole("seed", v, -1, 2147483647, "Seed must be a whole number 0..2147483647 (-1 = random)");
}

function takes(v) {
    setWhole("takes", v, 1, MAX_TAKES, "Takes must be 1.." + MAX_TAKES);
}

function gen_mode(v) {
    setChoice("genMode", v, GEN_MODES, "Unknown generation mode '" + v + "': use text, continue or melody");
}

function preview(v) {
    settings.preview = Number(v) ? 1 : 0;
}

// Live's sample rate, from [dspstate~] (asked for on init)
function sample_rate(v) {
    var sr = Number(v);
    if (sr >= 8000 && sr <= 192000) settings.sampleRate = Math.round(sr);
}

// A file dropped on [live.drop]: an image or a video for generate
function media() {
    var path = maxPathToNative(joinAtoms(arguments), env.os);
    if (MIDI_EXTENSIONS.indexOf(extension(path)) >= 0) {
        settings.midiFile = path;
        settings.melodyNotes = null;
        ui("media", ["melody: " + path.substring(path.lastIndexOf("/") + 1)]);
        setStatus("Generate / edit will follow the MIDI file " + path);
        return;
    }
    var kind = mediaKind(path);
    if (!kind) {
        setStatus("Drop an image (" + IMAGE_EXTENSIONS.join(" ") + ") or a video (" + VIDEO_EXTENSIONS.join(" ") +
            "); got " + path);
        return;
    }
    settings.media = path;
    ui("media", [kind + ": " + path.substring(path.lastIndexOf("/") + 1)]);
    setStatus("Generate will use the " + kind + " " + path);
}

function media_clear() {
    settings.media = "";
    settings.midiFile = "";
    ui("media", ["drop an image or video"]);
}

function conditioning(v) {
    setChoice("conditioning", v, CONDITIONINGS, "Unknown conditioning '" + v + "': use text or embedding");
}

function vocoder(v) {
    setChoice("vocoder", v, VOCODERS, "Unknown vocoder '" + v + "': use encodec or mbd");
}

function bars(v) {
    setWhole("bars", v, 0, MAX_BARS, "Bars must be 0 (not set) to " + MAX_BARS);
}

function loop(v) {
    settings.loop = Number(v) ? 1 : 0;
}

function fit_tempo(v) {
    settings.fitTempo = Number(v) ? 1 : 0;
}

// Clip melody on: the selected MIDI clip's notes become the melody of the next generate / edit
// (the server's mode melody); off: forgotten.
function melody_clip(v) {
    if (!Number(v)) {
        settings.melodyNotes = null;
        setStatus("No melody clip: the music follows the prompt");
        return;
    }
    try {
        var read = selectedMidiNotes();
        if (!read) {
            setStatus("Select a MIDI clip first (its notes become the melody)");
            return;
        }
        if (!read.notes.length) {
            setStatus("The selected MIDI clip has no notes between its start and end markers");
            return;
        }
        settings.melodyNotes = read.notes;
        settings.midiFile = "";
        setStatus("Melody: " + read.notes.length + " notes of the clip '" + read.name + "' (" +
            round3(read.seconds) + " s at " + read.tempo + " bpm)");
    } catch (e) {
        setStatus("Could not read the MIDI clip: " + e.message);
    }
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
    if (!(p === 0 || validPort(p))) {
        setStatus("Reply port must be 1..65535, or 0 for automatic; got " + p);
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
    env.outlet(OUT_RECEIVER, ["port", claimReplyPort()]);
}

function hello() {
    sendOsc("/m2u/hello", [state.port]);
}

function ping() {
    sendOsc("/m2u/ping", [state.port]);
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

// A get_notes_extended answer (a JSON text, or a list holding one) -> its notes list.
function parseNotes(raw) {
    var text = raw instanceof Array ? raw.join(" ") : String(raw);
    var parsed = JSON.parse(text);
    return parsed.notes || [];
}

// The selected MIDI clip's notes between its start and end markers, in seconds from its start marker
// at the song tempo (Live's tempo automation is not followed): {notes, name, seconds, tempo}, or null
// when the selected clip is not a MIDI clip. Muted notes are left out; a note is cut at the end marker.
function selectedMidiNotes() {
    var clip = live("live_set view detail_clip");
    if (!clip || num(clip.id) === 0 || num(clip.get("is_midi_clip")) !== 1) return null;
    var tempo = num(live("live_set").get("tempo"));
    if (!(tempo > 0)) throw new Error("the song tempo is unknown");
    var start = num(clip.get("start_marker"));
    var end = num(clip.get("end_marker"));
    var spb = 60.0 / tempo;
    var notes = [];
    var raw = parseNotes(clip.call("get_notes_extended", 0, 128, start, end - start));
    for (var i = 0; i < raw.length; i++) {
        var n = raw[i];
        if (n.mute) continue;
        var s = Math.max(Number(n.start_time), start);
        var e = Math.min(Number(n.start_time) + Number(n.duration), end);
        if (!(e > s)) continue;
        notes.push([Math.round((s - start) * spb * 1e6) / 1e6, Math.round((e - start) * spb * 1e6) / 1e6,
            Math.round(Number(n.pitch)), Math.max(1, Math.min(127, Math.round(Number(n.velocity))))]);
    }
    notes.sort(function (a, b) { return a[0] - b[0] || a[2] - b[2]; });
    return { notes: notes, name: str(clip.get("name")), seconds: (end - start) * spb, tempo: tempo };
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

// The Set's file (for the results folder); "" when unsaved or when Live cannot say.
function setFilePath() {
    try {
        return str(live("live_set").get("file_path"));
    } catch (e) {
        return "";
    }
}

// One /m2u/submit carries every option of the request (no earlier /m2u/set needed).
function submitArgs(request) {
    if (request.kind === "transcribe") {
        return [request.kind, "audio", request.input.path, "start", request.input.start, "end", request.input.end,
            "bpm", request.tempo, "time_signature", request.numerator, request.denominator,
            "results_dir", request.resultsDir, "reply_port", state.port];
    }
    var args = [request.kind, "prompt", request.prompt, "duration", request.duration,
        "seed", request.seed, "takes", request.takes, "mode", request.genMode,
        "conditioning", request.conditioning, "bpm", request.tempo,
        "time_signature", request.numerator, request.denominator,
        "results_dir", request.resultsDir, "reply_port", state.port];
    if (request.sampleRate) args.push("sample_rate", request.sampleRate, "project_sample_rate", request.sampleRate);
    if (request.input) args.push("audio", request.input.path, "start", request.input.start, "end", request.input.end);
    if (request.media) args.push(mediaKind(request.media), request.media);
    if (request.kind !== "ask") {
        args.push("vocoder", request.vocoder, "bars", request.bars, "loop", request.loop, "fit_tempo", request.fitTempo);
        if (request.midiJson) args.push("midi_notes", request.midiJson);
        else if (request.midiFile) args.push("midi", request.midiFile);
    }
    if (request.adapter) args.push("adapter", request.adapter);
    return args;
}

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
    if (state.preview) discard(true);

    var position;
    if (input && input.positionBeats !== null) position = input.positionBeats;
    else if (ctx.loopOn) position = ctx.loopStart;
    else position = ctx.songTime;

    var dur = settings.duration;
    if (dur === 0 && settings.mode === "generate" && ctx.loopOn && ctx.tempo > 0) {
        dur = Math.min(300, round3(ctx.loopLength * 60.0 / ctx.tempo));
    }
    if (settings.bars > 0) dur = 0;   // the length in bars (the server refuses both)
    var melody = settings.mode !== "ask" && settings.melodyNotes ? settings.melodyNotes : null;
    send({
        kind: settings.mode,
        prompt: settings.prompt,
        duration: dur,
        seed: settings.seed,
        takes: settings.mode === "ask" ? 1 : settings.takes,
        genMode: settings.genMode,
        conditioning: settings.conditioning,
        tempo: ctx.tempo,
        numerator: ctx.numerator,
        denominator: ctx.denominator,
        sampleRate: settings.sampleRate,
        resultsDir: resultsFolder(setFilePath()),
        input: input,
        media: settings.mode === "generate" ? settings.media : "",
        vocoder: settings.vocoder,
        bars: settings.bars,
        loop: settings.loop,
        fitTempo: settings.fitTempo,
        midiJson: melody ? JSON.stringify(melody) : "",
        midiFile: settings.mode !== "ask" && !melody ? settings.midiFile : "",
        adapter: settings.adapter,
        positionBeats: Math.max(0, Math.min(ARRANGEMENT_MAX_BEATS, position))
    });
}

// Transcribe: the selected audio clip (else the last recording) -> a transcribe job -> its notes as
// a new MIDI clip (placeMidi). No prompt.
function transcribe() {
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (state.job || state.pending) {
        setStatus("A job is running (" + (state.job || "sent") + "): wait or press Cancel");
        return;
    }
    var ctx, input;
    try {
        ctx = songContext();
        input = audioInput(ctx);
    } catch (e) {
        setStatus("Could not read the Set: " + e.message);
        return;
    }
    if (!input) {
        setStatus("Transcribe needs audio: select an audio clip or record with Rec");
        return;
    }
    if (state.preview) discard(true);
    send({
        kind: "transcribe", prompt: "", seed: -1, takes: 1, tempo: ctx.tempo, numerator: ctx.numerator,
        denominator: ctx.denominator, resultsDir: resultsFolder(setFilePath()), input: input, media: "",
        positionBeats: input.positionBeats !== null ? input.positionBeats : 0
    });
}

// Send a request (from Go, or Regenerate with another seed) and wait for /m2u/accepted.
function send(request) {
    sendOsc("/m2u/submit", submitArgs(request));
    var input = request.input;
    awaitAccepted(request, "Sent " + request.kind +
        (input ? " (" + input.source + " " + input.start + "-" + input.end + " s)" : "") +
        (request.media ? " with " + mediaKind(request.media) : "") +
        (request.seed >= 0 ? ", seed " + request.seed : "") + (request.takes > 1 ? ", " + request.takes + " takes" : "") +
        (request.adapter ? ", adapter " + request.adapter : "") + " to " + settings.host + ":" + settings.port);
}

// A request is out: the device is busy until /m2u/accepted (or the watchdog gives up).
function awaitAccepted(request, status) {
    state.kind = request.kind;
    state.pending = { sentMs: new Date().getTime() };
    state.request = request;
    state.chunks = null;
    state.noteChunks = null;
    state.takes = [];
    state.analysis = {};
    ui("busy", [1]);
    ui("progress", [0]);
    ui("answer", [""]);
    ui("analysis", [""]);
    setStatus(status);
    state.watchdog = defer(acceptTimeout, ACCEPT_TIMEOUT_MS);
}

function acceptTimeout() {
    state.watchdog = null;
    if (!state.pending) return;
    state.pending = null;
    state.request = null;
    ui("busy", [0]);
    setStatus("No answer from the bridge at " + settings.host + ":" + settings.port +
        " (is `m2ugen bridge` running, reply port " + state.port + " free?)");
}

// Cancel: the bridge is asked to stop the job, and the device forgets it at once (a bridge that is
// gone can never leave the device busy).
function cancel() {
    if (state.job || state.pending) {
        var what = state.job || "the request just sent";
        sendOsc("/m2u/cancel", [state.job || "last", state.port]);
        finishJob();
        state.request = null;
        state.chunks = null;
        ui("progress", [0]);
        setStatus("Cancelled " + what);
    } else if (state.preview) {
        discard();
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
    state.unanswered = 0;
    ui("busy", [0]);
}

// ------------------------------------------------------------------------------------------------
// personal adapters: learn one from audio files on the server (a finetune job), use one

// The adapter ask/edit/generate use (a fine-tune the server holds); empty = the base model.
function adapter() {
    var name = joinAtoms(arguments);
    if (name && !ADAPTER_NAME.test(name)) {
        setStatus("Adapter: 1 to 64 letters, digits, _ or -; got " + name);
        return;
    }
    settings.adapter = name;
    setStatus(name ? "Ask / Edit / Generate use adapter " + name : "Ask / Edit / Generate use the base model");
}

// An audio file dropped on the learn area: one more clip for learn.
function learn_file() {
    var path = maxPathToNative(joinAtoms(arguments), env.os);
    if (AUDIO_EXTENSIONS.indexOf(extension(path)) < 0) {
        setStatus("Learn takes audio files (" + AUDIO_EXTENSIONS.join(" ") + "); got " + path);
        return;
    }
    if (settings.learnFiles.indexOf(path) < 0) {
        if (settings.learnFiles.length >= MAX_LEARN_FILES) {
            setStatus("Learn takes at most " + MAX_LEARN_FILES + " files");
            return;
        }
        settings.learnFiles.push(path);
    }
    setStatus("Learn: " + settings.learnFiles.length + " file(s), last " + path.substring(path.lastIndexOf("/") + 1));
}

function learn_clear() {
    settings.learnFiles = [];
    setStatus("Learn: no files");
}

function learn_name() {
    settings.learnName = joinAtoms(arguments);
}

// Learn: the dropped files (else the selected audio clip's file) -> the bridge's /m2u/learn: the
// server trains adapter `name` (argument, else the name field) and loads it when done.
function learn() {
    var name = joinAtoms(arguments) || settings.learnName;
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (state.job || state.pending) {
        setStatus("A job is running (" + (state.job || "sent") + "): wait or press Cancel");
        return;
    }
    if (!ADAPTER_NAME.test(name || "")) {
        setStatus("Learn: name the adapter (1 to 64 letters, digits, _ or -); got " + (name || "nothing"));
        return;
    }
    var files = settings.learnFiles.slice();
    if (!files.length) {
        try {
            var region = selectedClipRegion(songContext());
            if (region) files = [region.path];
        } catch (e) {
            setStatus("Could not read the Set: " + e.message);
            return;
        }
    }
    if (!files.length) {
        setStatus("Learn: drop audio files on the learn area, or select an audio clip");
        return;
    }
    if (state.preview) discard(true);
    sendOsc("/m2u/learn", [name].concat(files).concat([state.port]));
    awaitAccepted({ kind: "finetune", adapterName: name, files: files, seed: -1, takes: 1 },
        "Learning adapter " + name + " from " + files.length + " file(s) on " + settings.host + ":" + settings.port);
}

// ------------------------------------------------------------------------------------------------
// preview: the device plays the result, then Accept / Regenerate / Discard

function playTake(index) {
    var p = state.preview;
    if (!p) return;
    p.current = index % p.paths.length;
    env.outlet(OUT_AUDIO, ["preview", 0]);
    env.outlet(OUT_AUDIO, ["preview", "open", forMax(p.paths[p.current])]);
    env.outlet(OUT_AUDIO, ["preview", 1]);
    setStatus("Preview take " + (p.current + 1) + "/" + p.paths.length +
        (p.seeds[p.current] >= 0 ? " (seed " + p.seeds[p.current] + ")" : "") +
        ": Accept, Regenerate or Discard" + (p.paths.length > 1 ? " (Play: next take)" : ""));
}

function play() {
    if (!state.preview) {
        setStatus("Nothing to preview");
        return;
    }
    playTake(state.preview.current + 1);
}

function accept() {
    var p = state.preview;
    if (!p) {
        setStatus("Nothing to accept");
        return;
    }
    env.outlet(OUT_AUDIO, ["preview", 0]);
    state.preview = null;
    defer(function () {
        placeResult(p.paths, p.seconds, p.request, p.seeds);
    }, 0);
}

function discard(quiet) {
    var p = state.preview;
    if (!p) {
        if (!quiet) setStatus("Nothing to discard");
        return;
    }
    env.outlet(OUT_AUDIO, ["preview", 0]);
    state.preview = null;
    if (!quiet) setStatus("Discarded (the file stays in " + dirname(p.paths[0]) + ")");
}

// The same request again with new seeds (the seed field's seed moves on by the number of takes).
function regenerate() {
    var p = state.preview;
    var request = p ? p.request : state.lastRequest;
    if (!request) {
        setStatus("Nothing to regenerate yet: press Go first");
        return;
    }
    if (state.job || state.pending) {
        setStatus("A job is running (" + (state.job || "sent") + "): wait or press Cancel");
        return;
    }
    if (p) discard(true);
    var again = {};
    for (var k in request) {
        if (request.hasOwnProperty(k)) again[k] = request[k];
    }
    again.seed = request.seed >= 0 ? (request.seed + Math.max(1, request.takes)) % 2147483648 : -1;
    send(again);
}

// ------------------------------------------------------------------------------------------------
// recording (no clip selected): [plugin~] -> [record~ m2u_capture 2] -> buffer~ -> writewave into the
// bridge's capture folder (temporary: the bridge deletes captures after a day)

function captureFolder() {
    return settings.captureDir || state.bridgeCaptureDir;
}

function rec(on) {
    on = Number(on) ? 1 : 0;
    if (on) {
        if (state.recording) return;
        if (!captureFolder()) {
            setStatus("Cannot record yet: the bridge has not answered (its capture folder is unknown)");
            return;
        }
        var startBeat = 0;
        try {
            startBeat = num(live("live_set").get("current_song_time"));
        } catch (e) {
            startBeat = 0;
        }
        env.outlet(OUT_AUDIO, ["buffer", "size", CAPTURE_SECONDS * 1000]);
        env.outlet(OUT_AUDIO, ["buffer", "clear"]);
        env.outlet(OUT_AUDIO, ["record", 1]);
        state.recording = { startedMs: new Date().getTime(), startBeat: startBeat };
        setStatus("Recording the track (up to " + CAPTURE_SECONDS + " s)...");
        return;
    }
    if (!state.recording) return;
    env.outlet(OUT_AUDIO, ["record", 0]);
    var seconds = Math.min(CAPTURE_SECONDS, (new Date().getTime() - state.recording.startedMs) / 1000.0);
    var path = forMax(captureFolder()) + "/m2ugen-capture-" + state.port + "-" + new Date().getTime() + ".wav";
    // only what was recorded: the buffer is cropped to it before it is written
    env.outlet(OUT_AUDIO, ["buffer", "crop", 0, Math.round(seconds * 1000)]);
    env.outlet(OUT_AUDIO, ["buffer", "writewave", path]);
    state.capture = { path: maxPathToNative(path, env.os), seconds: seconds, startBeat: state.recording.startBeat };
    state.recording = null;
    setStatus("Recorded " + round3(seconds) + " s: used when no audio clip is selected");
}

// ------------------------------------------------------------------------------------------------
// the job list (the bridge's /m2u/jobs) and re-inserting an earlier result

function refresh_jobs() {
    state.jobs = [];
    sendOsc("/m2u/jobs", [JOB_LIST_LENGTH, state.port]);
    setStatus("Asking the bridge for the last " + JOB_LIST_LENGTH + " jobs...");
}

function pick_job(index) {
    index = Number(index);
    if (!(index >= 0 && index < state.jobs.length)) {
        setStatus("No such job in the list: refresh it");
        return;
    }
    state.pickedJob = index;
    var j = state.jobs[index];
    setStatus("Job " + j.job + ": " + j.kind + " " + j.state + " " + j.created + " \"" + j.prompt + "\"");
}

function reinsert() {
    var j = state.jobs[state.pickedJob];
    if (!j) {
        setStatus("Pick a job in the list first (Jobs refreshes it)");
        return;
    }
    if (state.job || state.pending) {
        setStatus("A job is running (" + (state.job || "sent") + "): wait or press Cancel");
        return;
    }
    if (j.state !== "done" || j.kind === "ask") {
        setStatus("Job " + j.job + " has no audio to insert (" + j.kind + ", " + j.state + ")");
        return;
    }
    var ctx = songContext();
    state.request = {
        kind: j.kind, prompt: j.prompt, reinsert: true,
        positionBeats: Math.max(0, Math.min(ARRANGEMENT_MAX_BEATS, ctx.loopOn ? ctx.loopStart : ctx.songTime))
    };
    state.kind = j.kind;
    state.job = j.job;
    state.takes = [];
    state.analysis = {};
    state.lastEventMs = new Date().getTime();
    state.poll = defer(pollStatus, STATUS_POLL_MS);
    ui("busy", [1]);
    sendOsc("/m2u/result", [j.job, resultsFolder(setFilePath()), state.port]);
    setStatus("Fetching the result of job " + j.job + "...");
}

function jobLabel(j) {
    return j.created + " " + j.kind + " " + (j.state === "done" ? "" : "(" + j.state + ") ") + j.prompt.substring(0, 40);
}

// ------------------------------------------------------------------------------------------------
// OSC events from [udpreceive]

function anything() {
    var args = Array.prototype.slice.call(arguments);
    handleOsc(messagename, args);
}

// While the job is silent, ask /m2u/status; after MAX_UNANSWERED_POLLS requests with no reply at all
// the bridge is gone: stop waiting and say so.
function pollStatus() {
    state.poll = null;
    if (!state.job) return;
    var now = new Date().getTime();
    if (now - state.lastEventMs >= STATUS_POLL_MS) {
        if (state.unanswered >= MAX_UNANSWERED_POLLS) {
            var job = state.job;
            finishJob();
            state.request = null;
            setStatus("The bridge stopped answering (" + MAX_UNANSWERED_POLLS + " status requests unanswered): " +
                "gave up waiting for job " + job + ". It may still finish: Jobs lists it for re-insert.");
            return;
        }
        sendOsc("/m2u/status", [state.job, state.port]);
        state.unanswered += 1;
        state.lastEventMs = now;
    }
    state.poll = defer(pollStatus, STATUS_POLL_MS);
}

function handleOsc(address, args) {
    var job = args.length ? String(args[0]) : "";
    state.unanswered = 0;   // the bridge is there
    if (job && job === state.job) state.lastEventMs = new Date().getTime();
    if (address === "/m2u/welcome") {
        if (args.length > 7 && args[7]) state.bridgeCaptureDir = String(args[7]);
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
    } else if (address === "/m2u/analysis") {
        if (job !== state.job) return;
        state.analysis[String(args[1])] = String(args[2] || "");
        showAnalysis();
    } else if (address === "/m2u/take") {
        if (job !== state.job) return;
        state.takes[Number(args[1])] = { path: String(args[3] || ""), seed: Number(args[4]) };
    } else if (address === "/m2u/notes") {
        if (job !== state.job) return;
        onNotesChunk(Number(args[1]), Number(args[2]), args.length > 3 ? String(args[3]) : "");
    } else if (address === "/m2u/done") {
        if (job !== state.job) return;
        if (state.kind === "transcribe") onTranscribed(String(args[1] || ""), Number(args[2]));
        else onDone(String(args[1] || ""), Number(args[2]), Number(args[3]));
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
    } else if (address === "/m2u/job") {
        // index count job kind state prompt seconds created
        state.jobs[Number(args[0])] = {
            job: String(args[2]), kind: String(args[3]), state: String(args[4]), prompt: String(args[5] || ""),
            seconds: Number(args[6]), created: String(args[7] || "")
        };
    } else if (address === "/m2u/jobs") {
        ui("jobs_menu", ["clear"]);
        for (var i = 0; i < state.jobs.length; i++) {
            if (state.jobs[i]) ui("jobs_menu", ["append", jobLabel(state.jobs[i])]);
        }
        state.pickedJob = -1;
        setStatus(Number(args[0]) + " job(s) listed: pick one and press Re-insert");
    }
    // /m2u/set echoes need no action
}

function showAnalysis() {
    var parts = [];
    if (state.analysis.input) parts.push("Input: " + state.analysis.input);
    if (state.analysis.result) parts.push("Result: " + state.analysis.result);
    ui("analysis", [parts.join(" | ")]);
}

function onTextChunk(index, count, chunk) {
    if (!state.chunks || state.chunks.count !== count) state.chunks = { count: count, parts: [] };
    state.chunks.parts[index] = chunk;
    for (var i = 0; i < count; i++) {
        if (state.chunks.parts[i] === undefined) return;
    }
    ui("answer", [state.chunks.parts.join("")]);
}

function onNotesChunk(index, count, chunk) {
    if (!state.noteChunks || state.noteChunks.count !== count) state.noteChunks = { count: count, parts: [] };
    state.noteChunks.parts[index] = chunk;
}

// A transcription is done: its notes (the /m2u/notes chunks) become a MIDI clip, placed from a Task.
function onTranscribed(path, seconds) {
    var request = state.request;
    var job = state.job;
    var c = state.noteChunks;
    finishJob();
    state.request = null;
    ui("progress", [1]);
    var notes = null;
    if (c) {
        var complete = true;
        for (var i = 0; i < c.count; i++) {
            if (c.parts[i] === undefined) complete = false;
        }
        if (complete) {
            try {
                notes = JSON.parse(c.parts.join(""));
            } catch (e) {
                notes = null;
            }
        }
    }
    if (!notes) {
        revealFile(path, "The transcription's notes did not all arrive.");
        return;
    }
    defer(function () {
        placeMidi(notes, seconds, path, job, request);
    }, 0);
    setStatus("Transcribed: " + notes.length + " notes, placing them...");
}

function onDone(path, seconds, sampleRate) {
    var request = state.request;
    if (request && request.kind === "finetune") {
        finishJob();
        state.request = null;
        ui("progress", [1]);
        setStatus("Adapter " + request.adapterName + " learnt: type it in Adapter to use it");
        return;
    }
    var paths = [], seeds = [];
    for (var i = 0; i < state.takes.length; i++) {
        if (state.takes[i] && state.takes[i].path) {
            paths.push(state.takes[i].path);
            seeds.push(state.takes[i].seed);
        }
    }
    if (!paths.length && path) {
        paths.push(path);
        seeds.push(request && request.seed >= 0 ? request.seed : -1);
    }
    finishJob();
    state.request = null;
    if (request && !request.reinsert) state.lastRequest = request;
    ui("progress", [1]);
    if (!paths.length) {
        setStatus("Answer ready");
        return;
    }
    if (settings.preview && !(request && request.reinsert)) {
        state.preview = { paths: paths, seeds: seeds, seconds: seconds, request: request, current: 0 };
        playTake(0);
        return;
    }
    // Never touch the Set from the handler that received the event: place it from a Task.
    defer(function () {
        placeResult(paths, seconds, request, seeds);
    }, 0);
    setStatus("Done: " + round3(seconds) + " s at " + sampleRate + " Hz, placing it...");
}

// ------------------------------------------------------------------------------------------------
// placing the result: a new audio track right after the device's track, then one clip per take
// (session: consecutive clip slots from the selected scene; arrangement: one after another)

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

// Clip k of the takes: create it, return its LOM path or throw / return null.
function createTakeClip(trackPath, track, path, k, lengthBeats, request, arranger, firstScene) {
    var song = live("live_set");
    if (arranger) {
        var before = num(track.getcount("arrangement_clips"));
        var position = Math.min(ARRANGEMENT_MAX_BEATS, (request ? request.positionBeats : 0) + k * lengthBeats);
        track.call("create_audio_clip", path, position);
        return num(track.getcount("arrangement_clips")) === before + 1 ? trackPath + " arrangement_clips " + before : null;
    }
    var scene = firstScene + k;
    while (num(song.getcount("scenes")) <= scene) song.call("create_scene", -1);
    var slot = live(trackPath + " clip_slots " + scene);
    slot.call("create_audio_clip", path);
    return num(slot.get("has_clip")) === 1 ? trackPath + " clip_slots " + scene + " clip" : null;
}

// A new track at `index` (Song.create_audio_track / create_midi_track); false, with the status saying
// why and where the file is, when Live refuses or makes none.
function createTrack(song, call, index, trackCount, what, path) {
    try {
        song.call(call, index);
    } catch (e) {
        setStatus("Could not create a " + what + ": " + e.message + ". File: " + path);
        return false;
    }
    if (num(song.getcount("tracks")) !== trackCount + 1) {
        setStatus("Live did not create the " + what + ". File: " + path);
        return false;
    }
    return true;
}

function placeResult(paths, seconds, request, seeds) {
    if (typeof paths === "string") paths = [paths];
    seeds = seeds || [];
    var path = paths[0];
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
    var tempo = num(song.get("tempo"));
    var lengthBeats = tempo > 0 ? seconds * tempo / 60.0 : 0;
    var firstScene = arranger ? 0 : sceneIndexFromPath(canonicalPath("live_set view selected_scene"));

    if (!createTrack(song, "create_audio_track", index, trackCount, "track", path)) return false;
    var trackPath = "live_set tracks " + index;
    var track = live(trackPath);
    var label = "M2UGen " + (request ? request.kind + ": " + request.prompt : "result");
    var clips = [];
    var failure = "";
    for (var k = 0; k < paths.length; k++) {
        var clipPath = null;
        try {
            clipPath = createTakeClip(trackPath, track, paths[k], k, lengthBeats, request, arranger, firstScene);
        } catch (e) {
            failure = e.message;
        }
        if (!clipPath) {
            if (!failure) failure = "no clip appeared";
            break;
        }
        var clip = live(clipPath);
        clip.set("warping", 0);
        var name = paths.length > 1 ? label.substring(0, 44) + " (take " + (k + 1) +
            (seeds[k] >= 0 ? ", seed " + seeds[k] : "") + ")" : label.substring(0, 60);
        clip.set("name", name);
        clips.push(clipPath);
    }
    if (!clips.length) {
        // nothing half-created: remove the empty track again
        try {
            song.call("delete_track", index);
        } catch (e2) {
            log("could not delete the empty track " + index + ": " + e2.message);
        }
        setStatus("Live could not import the result" + (failure ? " (" + failure + ")" : "") + ". File: " + path);
        return false;
    }
    track.set("name", label.substring(0, 60));
    state.placed.push({ path: path, paths: paths.slice(0, clips.length), track: index, clips: clips, clip: clips[0],
        arrangement: arranger });
    var where = arranger ? " at beat " + round3(request ? request.positionBeats : 0) : " (session" +
        (clips.length > 1 ? ", scenes " + (firstScene + 1) + "-" + (firstScene + clips.length) : "") + ")";
    var missing = clips.length < paths.length ? "; take " + (clips.length + 1) + " failed: " + failure : "";
    setStatus("Placed " + (clips.length > 1 ? clips.length + " takes " : "") + "on track " + (index + 1) + where +
        ": " + round3(seconds) + " s" + missing);
    return true;
}

// A transcription as a new MIDI clip: a new MIDI track right after the device's track, the clip in
// its slot of the selected scene (create_clip), the notes added with add_new_notes (seconds -> beats
// at the song tempo). Nothing half-created: the track goes again when the clip cannot be made.
function placeMidi(notes, seconds, path, job, request) {
    var song = live("live_set");
    var tempo = num(song.get("tempo"));
    var bps = tempo / 60.0;
    var deviceTrack = trackIndexFromPath(canonicalPath("this_device canonical_parent"));
    var trackCount = num(song.getcount("tracks"));
    var index = deviceTrack >= 0 ? deviceTrack + 1 : trackCount;
    var scene = sceneIndexFromPath(canonicalPath("live_set view selected_scene"));
    var last = seconds || 0;
    var liveNotes = [];
    for (var i = 0; i < notes.length; i++) {
        var n = notes[i];
        last = Math.max(last, Number(n[1]));
        liveNotes.push({ pitch: Math.round(Number(n[2])), start_time: Number(n[0]) * bps,
            duration: (Number(n[1]) - Number(n[0])) * bps, velocity: Number(n[3]), mute: 0 });
    }
    var lengthBeats = Math.max(1, Math.ceil(last * bps));
    if (!createTrack(song, "create_midi_track", index, trackCount, "MIDI track", path)) return false;
    var trackPath = "live_set tracks " + index;
    var label = "M2UGen transcription " + job;
    try {
        var slot = live(trackPath + " clip_slots " + scene);
        slot.call("create_clip", lengthBeats);
        if (num(slot.get("has_clip")) !== 1) throw new Error("no clip appeared");
        var clip = live(trackPath + " clip_slots " + scene + " clip");
        if (liveNotes.length) clip.call("add_new_notes", { notes: liveNotes });
        clip.set("name", label.substring(0, 60));
    } catch (e2) {
        try {
            song.call("delete_track", index);
        } catch (e3) {
            log("could not delete the empty track " + index + ": " + e3.message);
        }
        setStatus("Live could not make the MIDI clip (" + e2.message + "). File: " + path);
        return false;
    }
    live(trackPath).set("name", label.substring(0, 60));
    state.placed.push({ path: path, track: index, clips: [trackPath + " clip_slots " + scene + " clip"], midi: true,
        notes: liveNotes.length });
    setStatus("Placed " + liveNotes.length + " notes on MIDI track " + (index + 1) + " (scene " + (scene + 1) + ")");
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
        go: go, cancel: cancel, rec: rec, ping: ping, transcribe: transcribe, melody_clip: melody_clip,
        vocoder: vocoder, bars: bars, loop: loop, fit_tempo: fit_tempo, media: media,
        adapter: adapter, learn: learn, learn_file: learn_file, learn_clear: learn_clear, learn_name: learn_name,
        handleOsc: handleOsc, placeResult: placeResult,
        resultsFolder: resultsFolder, mediaKind: mediaKind,
        supportsAudioClipImport: supportsAudioClipImport,
        trackIndexFromPath: trackIndexFromPath,
        beatsToFileSeconds: beatsToFileSeconds,
        maxPathToNative: maxPathToNative
    };
}
