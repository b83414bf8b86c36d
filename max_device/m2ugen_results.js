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
    if (slotTaken("fg")) return;
    if (p) discard(true);
    var again = {};
    for (var k in request) {
        if (request.hasOwnProperty(k)) again[k] = request[k];
    }
    again.seed = request.seed >= 0 ? (request.seed + Math.max(1, request.takes)) % 2147483648 : -1;
    send(again);
}

// ------------------------------------------------------------------------------------------------
// placing the result: new audio tracks right after the device's track, in one undo step.
// Session: one track, take k in the slot of the selected scene + k. Arrangement: take k on its own
// track at the same position (alternatives, takes 2+ muted), never laid end to end over later bars.

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

// Everything `fn` changes in the Set is one undo step (Song.begin_undo_step / end_undo_step): one
// Ctrl+Z takes the whole placement back.
function undoable(song, fn) {
    var open = false;
    try {
        song.call("begin_undo_step");
        open = true;
    } catch (e) {
        log("no undo step: " + e.message);
    }
    try {
        return fn();
    } finally {
        if (open) song.call("end_undo_step");
    }
}

// A new track at `index` (Song.create_audio_track / create_midi_track); false, with the status saying
// why and where the file is, when Live refuses or makes none.
function createTrack(song, call, index, what, path) {
    var before = num(song.getcount("tracks"));
    try {
        song.call(call, index);
    } catch (e) {
        setStatus("Could not create a " + what + ": " + e.message + ". File: " + path);
        return false;
    }
    if (num(song.getcount("tracks")) !== before + 1) {
        setStatus("Live did not create the " + what + ". File: " + path);
        return false;
    }
    return true;
}

function deleteTrack(song, index) {
    try {
        song.call("delete_track", index);
    } catch (e) {
        log("could not delete the empty track " + index + ": " + e.message);
    }
}

// An audio clip of `path` on `trackPath`: in the arrangement at `position` (beats), else in clip slot
// `scene`. Its LOM path, or null when Live made none (it may also throw).
function createAudioClip(trackPath, path, position, scene) {
    var song = live("live_set");
    var track = live(trackPath);
    if (scene === null) {
        var before = num(track.getcount("arrangement_clips"));
        track.call("create_audio_clip", path, Math.min(ARRANGEMENT_MAX_BEATS, position));
        return num(track.getcount("arrangement_clips")) === before + 1 ? trackPath + " arrangement_clips " + before : null;
    }
    while (num(song.getcount("scenes")) <= scene) song.call("create_scene", -1);
    var slot = live(trackPath + " clip_slots " + scene);
    slot.call("create_audio_clip", path);
    return num(slot.get("has_clip")) === 1 ? trackPath + " clip_slots " + scene + " clip" : null;
}

// How the result plays: a result of a warped region is warped onto the region's beats (the clip's
// warp markers between, scaled when the result is longer or shorter), so it spans the selection at
// any Set tempo; anything else plays at its own speed (warping off).
function setResultTiming(clip, warp, seconds) {
    if (!warp || !(warp.seconds > 0) || !(seconds > 0)) {
        clip.set("warping", 0);
        return "";
    }
    try {
        clip.set("warping", 1);
        var scale = seconds / warp.seconds;
        var current = JSON.parse(str(clip.get("warp_markers"))).warp_markers || [];
        // keep Live's first marker (beat 0 = second 0 of the file), drop the rest, then ours
        for (var i = current.length - 1; i >= 1; i--) clip.call("remove_warp_marker", current[i].beat_time);
        for (var k = 1; k < warp.markers.length; k++) {
            clip.call("add_warp_marker", { beat_time: warp.markers[k][0], sample_time: warp.markers[k][1] * scale });
        }
        var check = JSON.parse(str(clip.get("warp_markers"))).warp_markers || [];
        var last = check[check.length - 1];
        if (!last || Math.abs(last.beat_time - warp.span) > 1e-6) throw new Error("Live kept other warp markers");
        return "";
    } catch (e) {
        clip.set("warping", 0);
        return "; could not warp it onto the selection (" + e.message + "): it plays at its own speed";
    }
}

// Whether this Live can import audio from a device (Track / ClipSlot.create_audio_clip); when not, the
// status says so (and `more`) and the folder of `path` is revealed.
function canImportAudio(path, more) {
    var v;
    try {
        v = liveVersion();
    } catch (e) {
        revealFile(path, "Could not read Live's version (" + e.message + ").");
        return false;
    }
    if (!supportsAudioClipImport(v.major, v.minor, v.bugfix)) {
        revealFile(path, "Live " + v.major + "." + v.minor + "." + v.bugfix +
            " cannot import audio from a device (needs 11.3.25+ or 12.0.5+)." + (more || ""));
        return false;
    }
    return true;
}

function placeResult(paths, seconds, request, seeds) {
    if (typeof paths === "string") paths = [paths];
    seeds = seeds || [];
    if (!canImportAudio(paths[0])) return false;
    var song = live("live_set");
    return undoable(song, function () { return placeTakes(song, paths, seconds, request, seeds); });
}

function placeTakes(song, paths, seconds, request, seeds) {
    var deviceTrack = trackIndexFromPath(canonicalPath("this_device canonical_parent"));
    var index = deviceTrack >= 0 ? deviceTrack + 1 : num(song.getcount("tracks"));
    var arranger = str(live("live_app view").get("focused_document_view")) === "Arranger";
    var position = request ? request.positionBeats : 0;
    var firstScene = arranger ? 0 : sceneIndexFromPath(canonicalPath("live_set view selected_scene"));
    var warp = request && request.input ? request.input.warp : null;
    var label = "M2UGen " + (request ? request.kind + ": " + request.prompt : "result");
    var clips = [], tracks = [], failure = "", timing = "";
    for (var k = 0; k < paths.length; k++) {
        var trackIndex = arranger ? index + k : index;
        if ((arranger || k === 0) && !createTrack(song, "create_audio_track", trackIndex, "track", paths[k])) {
            failure = "no track";
            break;
        }
        if (arranger || k === 0) tracks.push(trackIndex);
        var trackPath = "live_set tracks " + trackIndex;
        var clipPath = null;
        try {
            clipPath = createAudioClip(trackPath, paths[k], position, arranger ? null : firstScene + k);
        } catch (e) {
            failure = e.message;
        }
        if (!clipPath) {
            if (!failure) failure = "no clip appeared";
            if (arranger || k === 0) {
                deleteTrack(song, trackIndex);   // nothing half-created
                tracks.pop();
            }
            break;
        }
        var clip = live(clipPath);
        timing = setResultTiming(clip, warp, seconds) || timing;
        var name = paths.length > 1 ? label.substring(0, 44) + " (take " + (k + 1) +
            (seeds[k] >= 0 ? ", seed " + seeds[k] : "") + ")" : label.substring(0, 60);
        clip.set("name", name);
        if (arranger && k > 0) clip.set("muted", 1);   // alternatives: take 1 plays, unmute another to hear it
        live(trackPath).set("name", name);
        clips.push(clipPath);
    }
    if (!clips.length) {
        setStatus("Live could not import the result" + (failure ? " (" + failure + ")" : "") + ". File: " + paths[0]);
        return false;
    }
    var muted = muteSource(request);
    remember({ path: paths[0], paths: paths.slice(0, clips.length), track: index, tracks: tracks, clips: clips,
        clip: clips[0], arrangement: arranger });
    var where = arranger ? (clips.length > 1 ? "s " + (index + 1) + "-" + (index + clips.length) : " " + (index + 1)) +
        " at beat " + round3(position) + (clips.length > 1 ? " (takes 2-" + clips.length + " muted)" : "")
        : " " + (index + 1) + " (session" + (clips.length > 1 ? ", scenes " + (firstScene + 1) + "-" + (firstScene + clips.length) : "") + ")";
    var missing = clips.length < paths.length ? "; take " + (clips.length + 1) + " failed: " + failure : "";
    setStatus("Placed " + (clips.length > 1 ? clips.length + " takes " : "") + "on track" + where + ": " + round3(seconds) +
        " s" + (muted ? "; source clip muted" : "") + timing + missing);
    return true;
}

// An edit replaces its source in playback: the source clip is muted (its Clip Activator off), in the
// placement's undo step, so one Ctrl+Z brings the source back and removes the result.
function muteSource(request) {
    if (!request || request.kind !== "edit" || !request.input || !request.input.clipId) return false;
    return muteClip(request.input.clipId);
}

// Clip.muted on (the clip's activator off); false when the clip is gone or Live refuses.
function muteClip(clipId) {
    try {
        var source = live("id " + clipId);
        if (num(source.id) === 0) return false;
        source.set("muted", 1);
        return true;
    } catch (e) {
        log("could not mute the source clip: " + e.message);
        return false;
    }
}

function remember(placed) {
    state.placed.push(placed);
    if (state.placed.length > MAX_PLACED) state.placed.splice(0, state.placed.length - MAX_PLACED);
}

// A transcription as MIDI clips: the melody (channel 0) and the chords (channel 1) each on a new MIDI
// track right after the device's track. An Arrangement clip's transcription goes into the Arrangement
// at the clip's position (Track.create_midi_clip from Live 12.1.10; before, a Session clip duplicated
// there and removed); anything else into the selected scene's slot. Notes: seconds -> beats at the
// song tempo. Nothing half-created: a track goes again when its clip cannot be made.
function placeMidi(notes, seconds, path, job, request) {
    var song = live("live_set");
    return undoable(song, function () { return placeMidiParts(song, notes, seconds, path, job, request); });
}

function placeMidiParts(song, notes, seconds, path, job, request) {
    var tempo = num(song.get("tempo"));
    var bps = tempo / 60.0;
    var deviceTrack = trackIndexFromPath(canonicalPath("this_device canonical_parent"));
    var index = deviceTrack >= 0 ? deviceTrack + 1 : num(song.getcount("tracks"));
    var scene = sceneIndexFromPath(canonicalPath("live_set view selected_scene"));
    var input = request ? request.input : null;
    var position = input && input.arrangement ? input.positionBeats : null;
    var parts = [{ name: "melody", notes: [] }, { name: "chords", notes: [] }];
    var last = seconds || 0;
    for (var i = 0; i < notes.length; i++) {
        var n = notes[i];
        last = Math.max(last, Number(n[1]));
        parts[Number(n[4]) === 1 ? 1 : 0].notes.push({ pitch: Math.round(Number(n[2])), start_time: Number(n[0]) * bps,
            duration: (Number(n[1]) - Number(n[0])) * bps, velocity: Number(n[3]), mute: 0 });
    }
    if (!parts[1].notes.length) parts.pop();
    var lengthBeats = Math.max(1, Math.ceil(last * bps));
    var placed = [], count = 0;
    for (var p = 0; p < parts.length; p++) {
        var at = index + placed.length;
        if (!createTrack(song, "create_midi_track", at, "MIDI track", path)) return false;
        var label = "M2UGen " + parts[p].name + " " + job;
        var clipPath;
        try {
            clipPath = makeMidiClip(song, "live_set tracks " + at, position, scene, lengthBeats);
            var clip = live(clipPath);
            if (parts[p].notes.length) clip.call("add_new_notes", { notes: parts[p].notes });
            clip.set("name", label.substring(0, 60));
        } catch (e) {
            deleteTrack(song, at);
            setStatus("Live could not make the MIDI clip (" + e.message + "). File: " + path);
            return false;
        }
        live("live_set tracks " + at).set("name", label.substring(0, 60));
        placed.push(clipPath);
        count += parts[p].notes.length;
    }
    remember({ path: path, track: index, clips: placed, midi: true, notes: count });
    var names = [];
    for (var q = 0; q < parts.length; q++) names.push(parts[q].notes.length + " " + parts[q].name + " notes");
    setStatus("Placed " + names.join(" and ") + " on MIDI track" + (placed.length > 1 ? "s " + (index + 1) + "-" +
        (index + placed.length) : " " + (index + 1)) + (position !== null ? " at beat " + round3(position) : " (scene " + (scene + 1) + ")"));
    return true;
}

// An empty MIDI clip on a new track: in the Arrangement at `position` (beats), else in slot `scene`.
function makeMidiClip(song, trackPath, position, scene, lengthBeats) {
    var track = live(trackPath);
    if (position !== null) {
        var v = liveVersion();
        var before = num(track.getcount("arrangement_clips"));
        if (v.major > 12 || (v.major === 12 && (v.minor > 1 || (v.minor === 1 && v.bugfix >= 10)))) {
            track.call("create_midi_clip", position, lengthBeats);
        } else {
            // older Live: made in a Session slot, copied into the Arrangement, the slot emptied again
            var helper = live(trackPath + " clip_slots 0");
            helper.call("create_clip", lengthBeats);
            var made = live(trackPath + " clip_slots 0 clip");
            track.call("duplicate_clip_to_arrangement", "id " + made.id, position);
            helper.call("delete_clip");
        }
        if (num(track.getcount("arrangement_clips")) !== before + 1) throw new Error("no clip appeared");
        return trackPath + " arrangement_clips " + before;
    }
    var slot = live(trackPath + " clip_slots " + scene);
    slot.call("create_clip", lengthBeats);
    if (num(slot.get("has_clip")) !== 1) throw new Error("no clip appeared");
    return trackPath + " clip_slots " + scene + " clip";
}
