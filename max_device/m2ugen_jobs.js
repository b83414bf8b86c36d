// m2ugen_jobs.js -- requests to the bridge and its events: Go, Transcribe, Learn, Cancel, the job list, OSC in
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).

// ------------------------------------------------------------------------------------------------
// Go / Cancel

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
