// m2ugen_jobs.js -- sending requests and following their jobs: two slots (interactive: ask / edit /
// generate / transcribe / re-insert; background: learn), uploads, late answers, cancel, polling and
// the bridge's events.
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).
//
// A job: {slot, tag, kind, request, id ("" until /m2u/accepted), upload, watchdog, poll, lastEventMs,
// fraction, chunks, noteChunks, takes, analysis}. Every request carries a tag (submit option `tag`)
// the bridge echoes in /m2u/accepted and in a refusal, so each answer finds its request -- also one
// that comes after the device stopped waiting (an orphan): it is adopted when its slot is free, else
// cancelled.

var MAX_ORPHANS = 16;

function slotOf(kind) {
    return kind === "finetune" ? "bg" : "fg";
}

// The slot's job is busy: say so (in that slot's line) and return true.
function slotTaken(slot) {
    var job = state.slots[slot];
    if (!job) return false;
    if (slot === "bg") {
        jobStatus(job, "Already learning " + job.request.adapterName + " (" + (job.id || "sent") + "): Stop learn first");
    } else {
        setStatus("A job is running (" + (job.id || "sent") + "): wait or press Cancel");
    }
    return true;
}

// The interactive job's lines are the status line and progress bar; the learn has its own line, every
// message of it naming the adapter.
function jobStatus(job, text) {
    if (job.slot === "bg") {
        var label = jobLabelOf(job);
        if (!/^(Learning|Adapter) /.test(text)) text = label + ": " + text;
        ui("learn_status", [text]);
        log(text);
    } else {
        setStatus(text);
    }
}

function jobLabelOf(job) {
    return job.kind === "finetune" ? "Learning " + job.request.adapterName : job.kind;
}

function findJob(id) {
    var slots = ["fg", "bg"];
    for (var i = 0; i < slots.length; i++) {
        var job = state.slots[slots[i]];
        if (job && job.id && job.id === id) return job;
    }
    return null;
}

function findByTag(tag) {
    var slots = ["fg", "bg"];
    for (var i = 0; i < slots.length; i++) {
        var job = state.slots[slots[i]];
        if (job && !job.id && job.tag === tag) return job;
    }
    return null;
}

// The oldest request still waiting for its /m2u/accepted (an answer without a tag, from an older bridge).
function oldestPending() {
    var a = state.slots.fg, b = state.slots.bg;
    a = a && !a.id ? a : null;
    b = b && !b.id ? b : null;
    if (a && b) return a.sentMs <= b.sentMs ? a : b;
    return a || b;
}

// A new job in its slot (the slot must be free).
function startJob(request) {
    state.seq += 1;
    var job = {
        slot: slotOf(request.kind), tag: state.token + "-r" + state.seq, kind: request.kind, request: request, id: "",
        upload: null, watchdog: null, poll: null, lastEventMs: 0, sentMs: new Date().getTime(), fraction: 0,
        chunks: null, noteChunks: null, takes: [], analysis: {}
    };
    state.slots[job.slot] = job;
    if (job.slot === "fg") {
        ui("busy", [1]);
        ui("progress", [0]);
        ui("answer", [""]);
        ui("analysis", [""]);
    }
    return job;
}

// The job runs on the server as `id`: follow it (poll while it is silent).
function adoptJob(job, id) {
    if (job.watchdog) {
        job.watchdog.cancel();
        job.watchdog = null;
    }
    job.id = id;
    job.lastEventMs = new Date().getTime();
    job.poll = defer(function () { pollStatus(job); }, STATUS_POLL_MS, "poll");
}

function finishJob(job) {
    if (job.watchdog) {
        job.watchdog.cancel();
        job.watchdog = null;
    }
    if (job.poll) {
        job.poll.cancel();
        job.poll = null;
    }
    if (state.slots[job.slot] === job) state.slots[job.slot] = null;
    if (job.slot === "fg") ui("busy", [0]);
}

// Send a request (Go, Transcribe, Learn, Regenerate): its upload first when it has one, then the submit;
// the device waits ACCEPT_TIMEOUT_MS for /m2u/accepted.
function send(request) {
    var job = startJob(request);
    var options = uploadOptions(request);
    if (options) {
        var text = JSON.stringify(options);
        if (utf8Length(text) > MAX_UPLOAD_BYTES) {
            finishJob(job);
            jobStatus(job, (request.melody ? "The melody has " + request.melody.length + " notes" : "The file list") +
                ": " + utf8Length(text) + " bytes, more than one request takes (" + MAX_UPLOAD_BYTES + "); shorten it");
            return;
        }
        job.upload = { id: job.tag + "-u", text: text, done: false };
    } else if (!sendSubmit(job)) {
        return;
    }
    var input = request.input;
    var what = request.kind === "finetune"
        ? "Learning adapter " + request.adapterName + " from " + request.files.length + " file(s)"
        : "Sent " + request.kind + (input ? " (" + input.source + " " + input.start + "-" + input.end + " s)" : "") +
          (request.media ? " with " + mediaKind(request.media) : "") +
          (request.melody ? " with a " + request.melody.length + "-note melody" : "") +
          (request.seed >= 0 ? ", seed " + request.seed : "") + (request.takes > 1 ? ", " + request.takes + " takes" : "") +
          (request.adapter ? ", adapter " + request.adapter : "");
    jobStatus(job, what + " to " + settings.host + ":" + settings.port +
        (request.resultsDir === "user" && state.noSetPath ? " (Live " + state.noSetPath + " cannot name the Set's folder: " +
            "results go to the bridge's results folder)" : ""));
    job.watchdog = defer(function () { acceptTimeout(job); }, ACCEPT_TIMEOUT_MS, "watchdog");
    if (job.upload) sendUpload(job);
}

// The upload in pieces of at most UPLOAD_PIECE characters (never splitting a UTF-16 pair); the bridge
// answers /m2u/uploaded when it has them all.
function sendUpload(job) {
    var text = job.upload.text;
    var pieces = [];
    for (var i = 0; i < text.length;) {
        var end = Math.min(text.length, i + UPLOAD_PIECE);
        var code = text.charCodeAt(end - 1);
        if (end < text.length && code >= 0xD800 && code <= 0xDBFF) end -= 1;
        pieces.push(text.substring(i, end));
        i = end;
    }
    for (var k = 0; k < pieces.length; k++) {
        sendOsc("/m2u/upload", [job.upload.id, k, pieces.length, pieces[k], state.port]);
    }
}

// The submit itself; false (the job gone, the status saying why) when it cannot go in one datagram.
function sendSubmit(job) {
    var args = submitArgs(job.request, job);
    var size = oscSize("/m2u/submit", args);
    if (size > MAX_DATAGRAM) {
        finishJob(job);
        jobStatus(job, "The request is " + size + " bytes, more than one UDP datagram holds (" + MAX_DATAGRAM +
            "): the prompt is too long");
        return false;
    }
    sendOsc("/m2u/submit", args);
    return true;
}

function acceptTimeout(job) {
    job.watchdog = null;
    if (job.id || state.slots[job.slot] !== job) return;
    finishJob(job);
    // an answer may still come: it is adopted or cancelled then (handleAccepted)
    state.orphans.push({ tag: job.tag, job: job, cancel: false });
    if (state.orphans.length > MAX_ORPHANS) state.orphans.shift();
    jobStatus(job, "No answer from the bridge at " + settings.host + ":" + settings.port +
        " (is `m2ugen bridge` running, reply port " + state.port + " free?)");
}

// /m2u/accepted job queue_pos [tag]
function handleAccepted(id, queuePos, tag) {
    var job = tag ? findByTag(tag) : oldestPending();
    if (job) {
        adoptJob(job, id);
        jobStatus(job, queuePos > 0 ? "Queued at position " + queuePos : (job.slot === "bg" ? "running" : "Running " + job.kind));
        return;
    }
    var orphan = null;
    for (var i = 0; i < state.orphans.length; i++) {
        if (tag ? state.orphans[i].tag === tag : true) {
            orphan = state.orphans.splice(i, 1)[0];
            break;
        }
    }
    if (!orphan) return;   // not this device's request
    var late = orphan.job;
    if (!orphan.cancel && !state.slots[late.slot]) {
        state.slots[late.slot] = late;
        if (late.slot === "fg") ui("busy", [1]);
        adoptJob(late, id);
        jobStatus(late, "The bridge answered late: job " + id + " (" + late.kind + ") adopted, running");
        return;
    }
    // cancelled by the user meanwhile, or its slot holds a newer request: stop it on the server
    sendOsc("/m2u/cancel", [id, state.port]);
    log("cancelled job " + id + ": its request had been given up (" + late.kind + ")");
}

// Cancel (interactive) / learn_cancel (background): the bridge is asked to stop the job, and the device
// forgets it at once (a bridge that is gone can never leave the device busy). A request not yet
// accepted is cancelled when its /m2u/accepted comes.
function cancelSlot(slot) {
    var job = state.slots[slot];
    if (!job) return false;
    finishJob(job);
    if (job.id) {
        sendOsc("/m2u/cancel", [job.id, state.port]);
    } else {
        state.orphans.push({ tag: job.tag, job: job, cancel: true });
        if (state.orphans.length > MAX_ORPHANS) state.orphans.shift();
    }
    if (slot === "fg") ui("progress", [0]);
    jobStatus(job, "Cancelled " + (job.id || "the request just sent"));
    return true;
}

function cancel() {
    if (cancelSlot("fg")) return;
    if (state.preview) discard();
    else setStatus("Nothing to cancel");
}

function learn_cancel() {
    if (!cancelSlot("bg")) ui("learn_status", ["Nothing to stop: no learn is running"]);
}

// ------------------------------------------------------------------------------------------------
// OSC events from [udpreceive]

function anything() {
    var args = Array.prototype.slice.call(arguments);
    handleOsc(messagename, args);
}

// While the job is silent, ask /m2u/status; after MAX_UNANSWERED_POLLS requests with no reply at all
// the bridge is gone: stop waiting and say so.
function pollStatus(job) {
    job.poll = null;
    if (state.slots[job.slot] !== job || !job.id) return;
    var now = new Date().getTime();
    if (now - job.lastEventMs >= STATUS_POLL_MS) {
        if (state.unanswered >= MAX_UNANSWERED_POLLS) {
            finishJob(job);
            jobStatus(job, "The bridge stopped answering (" + MAX_UNANSWERED_POLLS + " status requests unanswered): " +
                "gave up waiting for job " + job.id + ". It may still finish: Jobs lists it for re-insert.");
            return;
        }
        sendOsc("/m2u/status", [job.id, state.port]);
        state.unanswered += 1;
        job.lastEventMs = now;
    }
    job.poll = defer(function () { pollStatus(job); }, STATUS_POLL_MS, "poll");
}

function handleOsc(address, args) {
    var id = args.length ? String(args[0]) : "";
    state.unanswered = 0;   // the bridge is there
    var job = id ? findJob(id) : null;
    if (job) job.lastEventMs = new Date().getTime();
    if (address === "/m2u/welcome") {
        onWelcome(args);
    } else if (address === "/m2u/pong") {
        setStatus("Bridge " + args[0] + ", server " + args[1]);
    } else if (address === "/m2u/server") {
        setStatus("Server " + args[0] + (args[1] ? ": " + args[1] : ""));
    } else if (address === "/m2u/accepted") {
        handleAccepted(id, Number(args[1]), args.length > 2 ? String(args[2]) : "");
    } else if (address === "/m2u/uploaded") {
        onUploaded(id);
    } else if (address === "/m2u/error") {
        onError(id, args);
    } else if (!job) {
        if (address === "/m2u/job" || address === "/m2u/jobs") onJobList(address, args);
        // events of jobs this device does not follow (cancelled, given up) are ignored
    } else if (address === "/m2u/queued") {
        jobStatus(job, "Queued at position " + args[1]);
    } else if (address === "/m2u/progress") {
        job.fraction = Math.max(0, Math.min(1, Number(args[1])));
        if (job.slot === "fg") ui("progress", [job.fraction]);
        jobStatus(job, args[2] + " " + Math.round(100 * job.fraction) + "%");
    } else if (address === "/m2u/text") {
        onTextChunk(job, Number(args[1]), Number(args[2]), args.length > 3 ? String(args[3]) : "");
    } else if (address === "/m2u/analysis") {
        job.analysis[String(args[1])] = String(args[2] || "");
        showAnalysis(job);
    } else if (address === "/m2u/take") {
        job.takes[Number(args[1])] = { path: String(args[3] || ""), seed: Number(args[4]) };
    } else if (address === "/m2u/notes") {
        onNotesChunk(job, Number(args[1]), Number(args[2]), args.length > 3 ? String(args[3]) : "");
    } else if (address === "/m2u/done") {
        if (job.kind === "transcribe") onTranscribed(job, String(args[1] || ""), Number(args[2]));
        else onDone(job, String(args[1] || ""), Number(args[2]), Number(args[3]));
    } else if (address === "/m2u/cancelled") {
        finishJob(job);
        jobStatus(job, "Cancelled " + id);
    } else if (address === "/m2u/status") {
        // reply to a poll: job state fraction stage queue_pos (a finished job's outcome follows by itself)
        if (args[1] === "queued") jobStatus(job, "Queued at position " + args[4]);
        else if (args[1] === "running" && job.slot === "fg") ui("progress", [Math.max(0, Math.min(1, Number(args[2])))]);
    }
    // /m2u/set echoes need no action
}

function onWelcome(args) {
    state.welcomed = true;
    if (state.helloTask) {
        state.helloTask.cancel();
        state.helloTask = null;
    }
    if (args.length > 7 && args[7]) state.bridgeCaptureDir = String(args[7]);
    if (args[1] === "up") {
        setStatus("Connected: " + args[3] + (Number(args[4]) ? " (tiny test model)" : "") + ", bridge " + args[0]);
    } else {
        setStatus("Bridge " + args[0] + " is up but the M2UGen server is down: start `m2ugen serve`");
    }
}

function onUploaded(uploadId) {
    var slots = ["fg", "bg"];
    for (var i = 0; i < slots.length; i++) {
        var job = state.slots[slots[i]];
        if (job && !job.id && job.upload && job.upload.id === uploadId && !job.upload.done) {
            job.upload.done = true;
            sendSubmit(job);
        }
    }
}

// /m2u/error job|tag|"" code message
function onError(id, args) {
    var job = id ? (findJob(id) || findByTag(id)) : oldestPending();
    if (!job) {
        for (var i = 0; i < state.orphans.length; i++) {
            if (id && state.orphans[i].tag === id) {
                state.orphans.splice(i, 1);   // a given-up request was refused after all: nothing runs
                return;
            }
        }
        if (!id) setStatus("Bridge error " + args[1] + ": " + args[2]);
        return;
    }
    finishJob(job);
    jobStatus(job, "Error " + args[1] + ": " + args[2]);
}

function onJobList(address, args) {
    if (address === "/m2u/job") {
        // index count job kind state prompt seconds created
        state.jobs[Number(args[0])] = {
            job: String(args[2]), kind: String(args[3]), state: String(args[4]), prompt: String(args[5] || ""),
            seconds: Number(args[6]), created: String(args[7] || "")
        };
        return;
    }
    ui("jobs_menu", ["clear"]);
    for (var i = 0; i < state.jobs.length; i++) {
        if (state.jobs[i]) ui("jobs_menu", ["append", jobLabel(state.jobs[i])]);
    }
    state.pickedJob = -1;
    setStatus(Number(args[0]) + " job(s) listed: pick one and press Re-insert");
}

function showAnalysis(job) {
    var parts = [];
    if (job.analysis.input) parts.push("Input: " + job.analysis.input);
    if (job.analysis.result) parts.push("Result: " + job.analysis.result);
    if (job.slot === "fg") ui("analysis", [parts.join(" | ")]);
}

function onTextChunk(job, index, count, chunk) {
    if (!job.chunks || job.chunks.count !== count) job.chunks = { count: count, parts: [] };
    job.chunks.parts[index] = chunk;
    for (var i = 0; i < count; i++) {
        if (job.chunks.parts[i] === undefined) return;
    }
    if (job.slot === "fg") ui("answer", [job.chunks.parts.join("")]);
    else jobStatus(job, job.chunks.parts.join("").substring(0, 200));
}

function onNotesChunk(job, index, count, chunk) {
    if (!job.noteChunks || job.noteChunks.count !== count) job.noteChunks = { count: count, parts: [] };
    job.noteChunks.parts[index] = chunk;
}

// A transcription is done: its notes (the /m2u/notes chunks) become MIDI clips, placed from a Task.
function onTranscribed(job, path, seconds) {
    var request = job.request;
    var c = job.noteChunks;
    finishJob(job);
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
        placeMidi(notes, seconds, path, job.id, request);
    }, 0);
    setStatus("Transcribed: " + notes.length + " notes, placing them...");
}

function onDone(job, path, seconds, sampleRate) {
    var request = job.request;
    finishJob(job);
    if (job.kind === "finetune") {
        jobStatus(job, "Adapter " + request.adapterName + " learnt: type it in Adapter to use it");
        return;
    }
    var paths = [], seeds = [];
    for (var i = 0; i < job.takes.length; i++) {
        if (job.takes[i] && job.takes[i].path) {
            paths.push(job.takes[i].path);
            seeds.push(job.takes[i].seed);
        }
    }
    if (!paths.length && path) {
        paths.push(path);
        seeds.push(request && request.seed >= 0 ? request.seed : -1);
    }
    if (job.kind === "stems") {
        // every stem, also one the bridge could not fetch (""), in the model's order: no preview
        paths = [];
        for (var s = 0; s < job.takes.length; s++) paths.push(job.takes[s] ? job.takes[s].path : "");
        if (!paths.length) paths.push(path);
        ui("progress", [1]);
        defer(function () {
            placeStems(paths, seconds, request);
        }, 0);
        setStatus("Separated into " + paths.length + " stems, placing them...");
        return;
    }
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
