// m2ugen_results.js -- results: the preview (Accept / Regenerate / Discard) and placing them in the Set
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).

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
