// m2ugen_set.js -- reading the Set: the song's context, the selected clip's region and notes, the recording
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).

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

// The selected audio clip with its file and warp markers ({clip, path, warping, markers}), or null when
// no audio clip with a file is selected.
function selectedAudioClip() {
    var clip = live("live_set view detail_clip");
    if (!clip || num(clip.id) === 0 || num(clip.get("is_audio_clip")) !== 1) return null;
    var path = str(clip.get("file_path"));
    if (!path) return null;
    var warping = num(clip.get("warping")) === 1;
    return { clip: clip, path: path, warping: warping, markers: warping ? clipWarpMarkers(clip) : [] };
}

// The region of a selectedAudioClip() from clip beat `lo` to `hi`, in file seconds (warped: through its
// warp markers): {path, start, end, seconds, source, clipId (an edit's result mutes it: placeResult),
// arrangement, positionBeats (its Arrangement position, null in Session), warp (a warped clip: how the
// region's seconds sit on its beats, so the result spans the same beats)}.
function clipRegion(sel, lo, hi, tempo) {
    var start = beatsToFileSeconds(lo, sel.warping, sel.markers, tempo);
    var end = beatsToFileSeconds(hi, sel.warping, sel.markers, tempo);
    if (!(end > start)) throw new Error("the selected clip's end marker is not after its start marker");
    var arrangement = num(sel.clip.get("is_arrangement_clip")) === 1;
    return {
        path: sel.path, start: Math.max(0, round3(start)), end: Math.max(0, round3(end)), seconds: end - start,
        source: "clip", clipId: num(sel.clip.id), arrangement: arrangement,
        positionBeats: arrangement ? num(sel.clip.get("start_time")) : null,
        warp: sel.warping ? regionWarp(sel.markers, lo, hi, tempo) : null
    };
}

// The selected clip's region (start marker to end marker) as an audio input, or null when no audio clip
// is selected.
function selectedClipRegion(ctx) {
    var sel = selectedAudioClip();
    if (!sel) return null;
    return clipRegion(sel, num(sel.clip.get("start_marker")), num(sel.clip.get("end_marker")), ctx.tempo);
}

// A warped clip's warp markers: M4L returns them as a JSON dict {"warp_markers": [{"sample_time",
// "beat_time"}, ...]}; [] when Live gives nothing readable.
function clipWarpMarkers(clip) {
    try {
        return JSON.parse(str(clip.get("warp_markers"))).warp_markers || [];
    } catch (e) {
        return [];
    }
}

// A get_notes_extended answer (a JSON text, or a list holding one) -> its notes list.
function parseNotes(raw) {
    var text = raw instanceof Array ? raw.join(" ") : String(raw);
    var parsed = JSON.parse(text);
    return parsed.notes || [];
}

// A MIDI clip's notes between its start and end markers, in seconds from its start marker at the song
// tempo (Live's tempo automation is not followed): {notes, name, seconds, tempo, id, positionBeats
// (its Arrangement position, null for a Session clip)}, or null when `path` is not a MIDI clip. Muted
// notes are left out; a note is cut at the end marker.
function midiClipNotes(path) {
    var clip = live(path);
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
    return {
        notes: notes, name: str(clip.get("name")), seconds: (end - start) * spb, tempo: tempo, id: num(clip.id),
        positionBeats: num(clip.get("is_arrangement_clip")) === 1 ? num(clip.get("start_time")) : null
    };
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

// The Set's file (for the results folder); "" when unsaved or when Live cannot say. Live 11.3.25 to
// 11.3.41 have no Song.file_path (asking only prints an error in Max): not asked there.
function setFilePath() {
    try {
        var v = liveVersion();
        if (!hasSongFilePath(v.major, v.minor, v.bugfix)) {
            state.noSetPath = v.major + "." + v.minor + "." + v.bugfix;
            return "";
        }
        state.noSetPath = "";
        return str(live("live_set").get("file_path"));
    } catch (e) {
        return "";
    }
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
