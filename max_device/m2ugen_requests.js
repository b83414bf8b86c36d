// m2ugen_requests.js -- what the device asks for: Go (ask / edit / generate), Transcribe, Learn, the job
// list and Re-insert. Sending them and following their jobs is m2ugen_jobs.js.
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).

// One /m2u/submit carries every option of the request (no earlier /m2u/set needed); what may grow
// past one datagram (a clip melody's notes, many learn files) goes as an upload the submit names.
function submitArgs(request, job) {
    var args;
    if (request.kind === "transcribe") {
        args = [request.kind, "audio", request.input.path, "start", request.input.start, "end", request.input.end,
            "bpm", request.tempo, "time_signature", request.numerator, request.denominator,
            "dereverb", request.dereverb, "results_dir", request.resultsDir];
    } else if (request.kind === "stems") {
        args = [request.kind, "audio", request.input.path, "start", request.input.start, "end", request.input.end,
            "stem_model", request.stemModel, "results_dir", request.resultsDir];
    } else if (request.kind === "finetune") {
        args = [request.kind, "adapter_name", request.adapterName];
        if (request.steps) args.push("steps", request.steps);
        if (!job.upload) {
            for (var i = 0; i < request.files.length; i++) args.push("clip", request.files[i]);
        }
    } else {
        args = [request.kind, "prompt", request.prompt, "duration", request.duration,
            "seed", request.seed, "takes", request.takes, "mode", request.genMode,
            "conditioning", request.conditioning, "bpm", request.tempo,
            "time_signature", request.numerator, request.denominator,
            "results_dir", request.resultsDir];
        if (request.sampleRate) args.push("sample_rate", request.sampleRate, "project_sample_rate", request.sampleRate);
        if (request.input) args.push("audio", request.input.path, "start", request.input.start, "end", request.input.end);
        if (request.media) args.push(mediaKind(request.media), request.media);
        if (request.kind !== "ask") {
            // stereo results, as REAPER asks for them (the server's default is mono)
            args.push("channels", RESULT_CHANNELS, "vocoder", request.vocoder, "bars", request.bars,
                "loop", request.loop, "fit_tempo", request.fitTempo);
            if (request.midiFile && !request.melody) args.push("midi", request.midiFile);
            if (request.stemEdit) args = args.concat(stemEditArgs(request.stemEdit));
        }
        if (request.adapter) args.push("adapter", request.adapter);
    }
    if (job.upload) args.push("upload", job.upload.id);
    args.push("tag", job.tag, "reply_port", state.port);
    return args;
}

// What a request uploads before its submit ({midi_notes} / {clip}), or null.
function uploadOptions(request) {
    if (request.melody) return { midi_notes: request.melody };
    if (request.kind === "finetune") {
        var inline = submitArgs(request, { tag: "m2u-0000000000000-000000000-r000", upload: null });
        if (oscSize("/m2u/submit", inline) > MAX_DATAGRAM - 512) return { clip: request.files };
    }
    return null;
}

// The notes of the Clip melody at submit time: the clip chosen when it was switched on (if it is still
// there), else the selected MIDI clip. {notes, clip, positionBeats} or a string saying what is wrong.
function melodyForRequest() {
    var read = null;
    if (state.melodyClipId) read = midiClipNotes("id " + state.melodyClipId);
    if (!read) read = midiClipNotes("live_set view detail_clip");
    if (!read) return "Clip melody is on: select the MIDI clip whose notes the music should follow";
    if (!read.notes.length) return "The melody clip '" + read.name + "' has no notes between its start and end markers";
    state.melodyClipId = read.id;
    return read;
}

function go() {
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (slotTaken("fg")) return;
    var stemEdit = settings.mode === "edit" ? stemEditFromSettings(settings.prompt) : null;
    if (typeof stemEdit === "string") {
        setStatus(stemEdit);
        return;
    }
    var promptText = stemEdit ? stemEdit.prompt : settings.prompt;
    if (!promptText) {
        setStatus("Type a prompt first");
        return;
    }
    var ctx, input = null, melody = null;
    try {
        ctx = songContext();
        if (settings.mode !== "generate") {
            input = audioInput(ctx);
            if (!input) {
                setStatus(settings.mode + " needs audio: select an audio clip or record with Rec");
                return;
            }
        }
        if (settings.melodyClip && settings.mode !== "ask") {
            melody = melodyForRequest();
            if (typeof melody === "string") {
                setStatus(melody);
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
    else if (melody && melody.positionBeats !== null) position = melody.positionBeats;
    else if (ctx.loopOn) position = ctx.loopStart;
    else position = ctx.songTime;

    var dur = settings.duration;
    if (dur === 0 && settings.mode === "generate" && ctx.loopOn && ctx.tempo > 0) {
        dur = Math.min(300, round3(ctx.loopLength * 60.0 / ctx.tempo));
    }
    if (settings.bars > 0) dur = 0;   // the length in bars (the server refuses both)
    send({
        kind: settings.mode,
        prompt: promptText,
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
        melody: melody ? melody.notes : null,
        midiFile: settings.mode !== "ask" && !melody ? settings.midiFile : "",
        adapter: settings.adapter,
        stemEdit: stemEdit,
        positionBeats: Math.max(0, Math.min(ARRANGEMENT_MAX_BEATS, position))
    });
}

// Transcribe: the selected audio clip (else the last recording) -> a transcribe job -> its notes as
// MIDI clips (placeMidi). No prompt.
function transcribe() {
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (slotTaken("fg")) return;
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
        dereverb: settings.dereverb, positionBeats: input.positionBeats !== null ? input.positionBeats : 0
    });
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

// Learn: the dropped files (else the selected audio clip's file) -> a finetune job: the server trains
// adapter `name` (argument, else the name field) and loads it when done. It runs in the background
// (its own status line, Stop learn); Ask / Edit / Generate / Transcribe keep working meanwhile.
function learn() {
    var name = joinAtoms(arguments) || settings.learnName;
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (slotTaken("bg")) return;
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
    send({ kind: "finetune", adapterName: name, files: files, steps: settings.learnSteps, seed: -1, takes: 1 });
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
    if (slotTaken("fg")) return;
    if (j.state !== "done" || j.kind === "ask") {
        setStatus("Job " + j.job + " has no audio to insert (" + j.kind + ", " + j.state + ")");
        return;
    }
    var ctx = songContext();
    var job = startJob({
        kind: j.kind, prompt: j.prompt, reinsert: true,
        positionBeats: Math.max(0, Math.min(ARRANGEMENT_MAX_BEATS, ctx.loopOn ? ctx.loopStart : ctx.songTime))
    });
    adoptJob(job, j.job);
    sendOsc("/m2u/result", [j.job, resultsFolder(setFilePath()), state.port]);
    setStatus("Fetching the result of job " + j.job + "...");
}

function jobLabel(j) {
    return j.created + " " + j.kind + " " + (j.state === "done" ? "" : "(" + j.state + ") ") + j.prompt.substring(0, 40);
}
