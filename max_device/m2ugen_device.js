// m2ugen_device.js -- the logic of the M2UGen Max for Live device.
//
// Runs in Max's [js] object (SpiderMonkey 1.8.5: plain ES5, no let/const/arrows/template strings).
// The patch (M2UGen.maxpat) wires it like this:
//   inlet  0 <- UI messages (mode, prompt, duration, seed, takes, gen_mode, preview, conditioning, host,
//               port, reply_port, go, cancel, accept, regenerate, discard, play, rec, media, media_clear,
//               refresh_jobs, pick_job, reinsert, sample_rate, ping, init, bars, loop, fit_tempo, vocoder,
//               melody_clip, transcribe, dereverb, adapter, learn, learn_file, learn_clear, learn_name, learn_cancel,
//               learn_steps, stems, stems6, stem_op, stem, stem_with) and OSC events from
//               [udpreceive 0 @defer 1] ("/m2u/done job path seconds sr" ...)
//   outlet 0 -> [udpsend]     OSC requests ("/m2u/submit generate prompt ...") and "host h" / "port p"
//   outlet 1 -> [udpreceive]  "port p" (the reply port this device listens on)
//   outlet 2 -> UI            "status text", "progress f", "answer text", "analysis text", "busy 0|1",
//                             "media text", "jobs_menu clear|append label", "learn_status text"
//   outlet 3 -> audio         "record 1|0" -> [record~], "buffer size|clear|crop|writewave ..." -> [buffer~],
//                             "preview open path|1|0" -> [sfplay~ 2], "dsp bang" -> [dspstate~]
//
// The code is split along its seams into files this one include()s (see the end): m2ugen_pure.js (pure
// functions), m2ugen_set.js (reading the Set), m2ugen_requests.js (what Go / Transcribe / Learn ask for),
// m2ugen_jobs.js (sending requests, following their jobs, bridge events), m2ugen_results.js (preview and
// placing), m2ugen_stems.js (Stems and the stem options of Edit). Every Max global (LiveAPI, Task,
// Global, outlet, post, messnamed, max, this.patcher) is reached through `env`; tests run the files under node's vm with a
// LOM stub (tests/max/harness.js), as Max's [js] runs them.

inlets = 1;
outlets = 4;
autowatch = 0;

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
var RESULT_CHANNELS = 2;       // stereo results (the server's default is mono; REAPER asks for 2 as well)
var MAX_DATAGRAM = 9216;       // macOS's default UDP datagram limit (net.inet.udp.maxdgram): never send more
var UPLOAD_PIECE = 2000;       // characters per /m2u/upload piece (at most ~8 KB of UTF-8 with its framing)
var MAX_UPLOAD_BYTES = 48 * 1024;   // the bridge's limit for one upload
var HELLO_RETRY_MS = 3000;     // /m2u/hello again until /m2u/welcome (the bridge may start after Live)
var MAX_PLACED = 32;           // placed results remembered

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
        dereverb: 1,            // Transcribe: 1 = a room's late reverberation subtracted first (0: a dry DI piano)
        melodyClip: 0,          // 1 = the notes of a MIDI clip (read at Go) are the melody of generate / edit
        midiFile: "",           // a .mid dropped on the device: the melody (generate / edit)
        adapter: "",            // the server's adapter ask/edit/generate use; "" = the base model
        learnName: "mine",      // the name "learn" gives the adapter it trains
        learnSteps: 0,          // optimizer steps of a learn; 0 = the server's default
        learnFiles: [],         // audio files dropped on the learn area
        stemOp: "auto",         // edit: auto (the prompt says) | remove | keep | replace | add (m2ugen_stems.js)
        stem: "drums",          // the stem remove / keep / replace act on
        stemWith: "",           // what replace / add make ("strings"); "" = read from the prompt
        stems6: 0               // 1 = the 6-stem model (htdemucs_6s: + guitar, piano)
    };
    state = {
        ready: false,           // live.thisdevice has banged: the LOM may be used
        token: "m2u-" + new Date().getTime() + "-" + Math.floor(Math.random() * 1e9),
        port: 0,                // the reply port in use
        slots: { fg: null, bg: null },  // the interactive job and the background one (learn): m2ugen_jobs.js
        seq: 0,                 // requests sent (their tags: token-r<seq>)
        orphans: [],            // requests given up on (no /m2u/accepted in time): adopted or cancelled if they show up
        unanswered: 0,          // status requests since the bridge last said anything
        welcomed: false,        // the bridge answered /m2u/hello
        helloTask: null,        // repeats /m2u/hello until it does (the bridge may start after Live)
        melodyClipId: 0,        // the Clip melody's clip (its LOM id), remembered when it was read
        noSetPath: "",          // the Live version when it has no Song.file_path (results go to the bridge's folder)
        preview: null,          // {paths, seeds, seconds, request, current} waiting for Accept/Discard
        bridgeCaptureDir: "",   // from /m2u/welcome
        recording: null,        // {startedMs, startBeat} while [record~] runs
        capture: null,          // {path, seconds, startBeat} of the last recording
        jobs: [],               // the job list from /m2u/jobs: {job, kind, state, prompt, seconds, created}
        pickedJob: -1,
        lastRequest: null,      // for Regenerate after Accept
        placed: []              // the last MAX_PLACED results placed in the Set (for the status line and tests)
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

// One OSC message to [udpsend]; never one over MAX_DATAGRAM (macOS would drop it without a word):
// false, with the reason in the Max window, instead.
function sendOsc(address, args) {
    var size = oscSize(address, args || []);
    if (size > MAX_DATAGRAM) {
        log("not sent: " + address + " would be " + size + " bytes, over the " + MAX_DATAGRAM + "-byte UDP limit");
        return false;
    }
    env.outlet(OUT_OSC, [address].concat(args || []));
    return true;
}

function defer(fn, ms, what) {
    // Max's Task runs fn later from the low-priority queue: never inside a LOM notification.
    var task = new env.Task(fn, JS_THIS);
    task.what = what || "";
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
// reply ports
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

// ------------------------------------------------------------------------------------------------
// messages from the patch (one function per message name, as Max's [js] dispatches them)

function init() {
    state.ready = true;
    configureNetwork();
    hello();
    if (!state.helloTask && !state.welcomed) state.helloTask = defer(helloRetry, HELLO_RETRY_MS, "hello");
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
        settings.melodyClip = 0;
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

// Transcribe's params.dereverb: off for a dry struck instrument, whose own decay reads as a room.
function dereverb(v) {
    settings.dereverb = Number(v) ? 1 : 0;
}

// learn_steps N: the optimizer steps of the next learns (1..20000; 0 = the server's default).
function learn_steps(v) {
    setWhole("learnSteps", v, 0, 20000, "Learn steps must be 0 (the server's default) to 20000");
}

// Clip melody on: the notes of a MIDI clip become the melody of every generate / edit, read again at
// each Go (so edits to the clip count): the clip selected now, else the one selected at Go. A saved
// toggle arrives before live.thisdevice: it is only remembered then (no LiveAPI before Live is ready).
function melody_clip(v) {
    settings.melodyClip = Number(v) ? 1 : 0;
    state.melodyClipId = 0;
    if (!settings.melodyClip) {
        setStatus("No melody clip: the music follows the prompt");
        return;
    }
    settings.midiFile = "";
    if (!state.ready) return;
    try {
        var read = midiClipNotes("live_set view detail_clip");
        if (!read) {
            setStatus("Select a MIDI clip first (its notes become the melody)");
            return;
        }
        state.melodyClipId = read.id;
        setStatus("Melody: " + read.notes.length + " notes of the clip '" + read.name + "' (" +
            round3(read.seconds) + " s at " + read.tempo + " bpm), read again at each Go");
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

// Until the bridge answers (it may start after Live), say hello again: its /m2u/welcome names the capture
// folder Rec needs.
function helloRetry() {
    state.helloTask = null;
    if (state.welcomed) return;
    hello();
    state.helloTask = defer(helloRetry, HELLO_RETRY_MS, "hello");
}

function ping() {
    sendOsc("/m2u/ping", [state.port]);
}

// ------------------------------------------------------------------------------------------------

// The device's other files: Max's JS include() finds them next to the device (its search path) and runs
// them in this file's scope (docs.cycling74.com/max8/vignettes/jsrequire, "Include Usage").
include("m2ugen_pure.js");
include("m2ugen_set.js");
include("m2ugen_requests.js");
include("m2ugen_jobs.js");
include("m2ugen_results.js");
include("m2ugen_stems.js");

env = maxEnv();
resetState();
