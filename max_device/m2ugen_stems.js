// m2ugen_stems.js -- stems: the selected audio clip split into stems (a `stems` job), each stem on its own
// new audio track next to its source, playing in time with it; and the stem options of Edit (op, stem,
// "with", the 6-stem model).
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).

// The server's stems (server/protocol.py STEMS, STEM_MODELS): htdemucs makes the first four, in this
// order; htdemucs_6s all six.
var STEM_NAMES = ["drums", "bass", "other", "vocals", "guitar", "piano"];
var STEM_OPS = ["auto", "remove", "keep", "replace", "add"];   // auto: the prompt says (no `op` sent)

// ------------------------------------------------------------------------------------------------
// settings (messages from the panel)

function stem_op(v) {
    setChoice("stemOp", v, STEM_OPS, "Unknown stem operation '" + v + "': use auto, remove, keep, replace or add");
}

function stem(v) {
    setChoice("stem", v, STEM_NAMES, "Unknown stem '" + v + "': use " + STEM_NAMES.join(", "));
}

// stem_with TEXT: what a replacement / addition is ("strings"); empty = read from the prompt
function stem_with() {
    settings.stemWith = joinAtoms(arguments).replace(/^\s+|\s+$/g, "").substring(0, 200);
}

// stems6 0|1: the 6-stem model (htdemucs_6s: + guitar, piano) for Stems and stem edits
function stems6(v) {
    settings.stems6 = Number(v) ? 1 : 0;
}

function stemModelFor(stemName) {
    return settings.stems6 || stemName === "guitar" || stemName === "piano" ? "htdemucs_6s" : "htdemucs";
}

// The edit's stem operation from the panel: null for auto (the server reads "remove the drums" from the
// prompt itself, anything else is an ordinary edit), else {op, stem, instrument, model, prompt} or a
// string saying what is missing. An explicit op with an empty prompt gets one made of its parts.
function stemEditFromSettings(prompt) {
    var op = settings.stemOp;
    if (op === "auto") return null;
    if ((op === "replace" || op === "add") && !settings.stemWith && !prompt) {
        return "Stem " + op + ": type what the new part is in 'with' (e.g. strings)";
    }
    if (settings.bars > 0 || settings.loop) {
        return "Stem " + op + " keeps the source's length: switch Loop off and set Bars to 0";
    }
    var s = op === "add" ? "" : settings.stem;
    var made = op === "add" ? "add " + settings.stemWith : op === "replace" ? "replace the " + s + " with " + settings.stemWith
        : op === "keep" ? "only the " + s : "remove the " + s;
    return { op: op, stem: s, instrument: op === "replace" || op === "add" ? settings.stemWith : "",
        model: op === "add" ? "" : stemModelFor(s), prompt: prompt || made };
}

// The submit options of a stem edit (bridge_osc/README.md: op, stem, instrument, stem_model).
function stemEditArgs(edit) {
    var args = ["op", edit.op];
    if (edit.stem) args.push("stem", edit.stem);
    if (edit.instrument) args.push("instrument", edit.instrument);
    if (edit.model) args.push("stem_model", edit.model);
    return args;
}

// ------------------------------------------------------------------------------------------------
// Stems: the selected audio clip -> a `stems` job -> one new audio track per stem

// The selected audio clip as the source of stems, or null. The region sent is what the clip plays:
// start marker to end marker, and with looping on also the loop brace (min / max of both), in file
// seconds (warped: through its warp markers). Its markers are kept (clip units, from the region's
// start) so each stem clip gets the same start, end and loop.
function stemSource(ctx) {
    var sel = selectedAudioClip();
    if (!sel) return null;
    var clip = sel.clip;
    var m = { start: num(clip.get("start_marker")), end: num(clip.get("end_marker")),
        loopStart: num(clip.get("loop_start")), loopEnd: num(clip.get("loop_end")), looping: num(clip.get("looping")) === 1 };
    var lo = m.start, hi = m.end;
    if (m.looping) {
        lo = Math.min(lo, m.loopStart);
        hi = Math.max(hi, m.loopEnd);
    }
    var s0 = beatsToFileSeconds(lo, sel.warping, sel.markers, ctx.tempo);
    if (s0 < -1e-6) throw new Error("the clip starts " + round3(-s0) + " s before its sample");
    var region = clipRegion(sel, lo, hi, ctx.tempo);
    var path = sel.path;
    var name = str(clip.get("name")) || path.substring(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
    region.name = name.replace(/\.[A-Za-z0-9]+$/, "");
    region.color = num(clip.get("color"));
    region.warping = sel.warping;
    region.markers = { start: m.start - lo, end: m.end - lo, loopStart: m.loopStart - lo, loopEnd: m.loopEnd - lo,
        looping: m.looping && sel.warping };
    return region;
}

// Stems (button): the selected audio clip's sample (the bridge reads and uploads it) -> /m2u/submit stems.
function stems() {
    if (!state.ready) {
        setStatus("Not ready yet: the device is still loading");
        return;
    }
    if (slotTaken("fg")) return;
    var ctx, source;
    try {
        ctx = songContext();
        source = stemSource(ctx);
    } catch (e) {
        setStatus("Could not read the Set: " + e.message);
        return;
    }
    if (!source) {
        setStatus("Stems needs an audio clip: select the clip to split (its sample goes to the server)");
        return;
    }
    if (state.preview) discard(true);
    send({
        kind: "stems", prompt: "", seed: -1, takes: 1, tempo: ctx.tempo, numerator: ctx.numerator,
        denominator: ctx.denominator, resultsDir: resultsFolder(setFilePath()), input: source, media: "",
        stemModel: stemModelFor(""),
        positionBeats: source.positionBeats !== null ? source.positionBeats : 0
    });
}

// The stem of each file: the bridge names them M2UGen-<stem>-<job>[-take<k>].wav; else the model's order.
function stemNames(paths, model) {
    var order = model === "htdemucs_6s" || paths.length > 4 ? STEM_NAMES : STEM_NAMES.slice(0, 4);
    var names = [];
    for (var i = 0; i < paths.length; i++) {
        var base = String(paths[i]).substring(Math.max(paths[i].lastIndexOf("/"), paths[i].lastIndexOf("\\")) + 1);
        var m = /^M2UGen-([a-z]+)-/.exec(base);
        names.push(m && STEM_NAMES.indexOf(m[1]) >= 0 ? m[1] : order[i] || "stem " + (i + 1));
    }
    return names;
}

// Where the stems go: right after the source clip's track, at its Arrangement position or in its Session
// scene (the clip is found again by id: tracks may have moved while the job ran). A re-insert (no
// source), or a source deleted meanwhile: after the device's track, like any result.
function stemTarget(song, request) {
    var src = request.input;
    var clipPath = src && src.clipId ? canonicalPath("id " + src.clipId) : "";
    var t = trackIndexFromPath(clipPath);
    if (t >= 0) {
        var slot = /^live_set tracks \d+ clip_slots (\d+) clip$/.exec(clipPath);
        return { index: t + 1, arrangement: !slot, scene: slot ? parseInt(slot[1], 10) : 0,
            position: slot ? 0 : num(live(clipPath).get("start_time")), source: true };
    }
    var deviceTrack = trackIndexFromPath(canonicalPath("this_device canonical_parent"));
    var arranger = str(live("live_app view").get("focused_document_view")) === "Arranger";
    return { index: deviceTrack >= 0 ? deviceTrack + 1 : num(song.getcount("tracks")), arrangement: arranger,
        scene: arranger ? 0 : sceneIndexFromPath(canonicalPath("live_set view selected_scene")),
        position: request.positionBeats || 0, source: false };
}

// Start, end and loop as the source's: Live refuses a start after its end (LOM Clip start_marker /
// end_marker, loop_start / loop_end), so each pair is written in the order that never crosses.
function setMarkerPair(clip, first, second, a, b) {
    if (a < num(clip.get(second))) {
        clip.set(first, a);
        clip.set(second, b);
    } else {
        clip.set(second, b);
        clip.set(first, a);
    }
}

// How a stem plays: as its source. A warped source: the stem is warped onto the same beats (its warp
// markers, setResultTiming) with the source's start, end and loop in beats; an unwarped one plays at its
// own speed with the source's start and end in seconds. "" or what could not be done.
function setStemTiming(clip, src, seconds) {
    if (!src) {
        clip.set("warping", 0);
        return "";
    }
    var failed = setResultTiming(clip, src.warping ? src.warp : null, seconds);
    if (failed) return failed;
    var m = src.markers;
    try {
        if (m.looping) {
            clip.set("looping", 1);
            setMarkerPair(clip, "loop_start", "loop_end", m.loopStart, m.loopEnd);
        } else {
            clip.set("looping", 0);
        }
        setMarkerPair(clip, "start_marker", "end_marker", m.start, m.end);
        return "";
    } catch (e) {
        return "; could not set the clip's markers (" + e.message + ")";
    }
}

function placeStems(paths, seconds, request) {
    var first = "";
    for (var i = 0; i < paths.length && !first; i++) first = paths[i];
    if (!first) {
        setStatus("No stem could be fetched: Jobs lists the job for re-insert");
        return false;
    }
    if (!canImportAudio(first, " The stems are in that folder.")) return false;
    var song = live("live_set");
    return undoable(song, function () { return placeStemTracks(song, paths, seconds, request, first); });
}

// One new audio track per stem, in the model's order, right after the source's track: named
// "<clip> - <stem>", colored like the source clip (the LOM cannot make group tracks), each clip where
// the source is. All in one undo step; a stem whose clip cannot be made leaves no empty track.
function placeStemTracks(song, paths, seconds, request, first) {
    var src = request && request.input ? request.input : null;
    var target = stemTarget(song, request || {});
    var names = stemNames(paths, request ? request.stemModel : "");
    var base = src ? src.name : "Stems";
    var placed = [], files = [], tracks = [], skipped = [], failure = "", timing = "";
    for (var k = 0; k < paths.length; k++) {   // a failure ends the loop (break)
        if (!paths[k]) {
            skipped.push(names[k]);
            continue;
        }
        var at = target.index + tracks.length;
        if (!createTrack(song, "create_audio_track", at, "track", paths[k])) {
            failure = "no track for the " + names[k];
            break;
        }
        var trackPath = "live_set tracks " + at;
        var clipPath = null;
        try {
            clipPath = createAudioClip(trackPath, paths[k], target.position, target.arrangement ? null : target.scene);
        } catch (e) {
            failure = e.message;
        }
        if (!clipPath) {
            deleteTrack(song, at);   // nothing half-created
            failure = "the " + names[k] + ": " + (failure || "no clip appeared");
            break;
        }
        var clip = live(clipPath);
        timing = setStemTiming(clip, target.source ? src : null, seconds) || timing;
        var label = (base.substring(0, 48) + " - " + names[k]);
        clip.set("name", label);
        var track = live(trackPath);
        track.set("name", label);
        if (src && src.color) {
            track.set("color", src.color);
            clip.set("color", src.color);
        }
        tracks.push(at);
        placed.push(clipPath);
        files.push(paths[k]);
    }
    if (!placed.length) {
        setStatus("Live could not import the stems (" + (failure || "none arrived") + "). Files in: " + dirname(first));
        return false;
    }
    // the stems together are the source: it is muted in the same undo step (not heard twice), only when
    // every stem is there
    var muted = !failure && !skipped.length && target.source ? muteClip(src.clipId) : false;
    remember({ path: files[0], paths: files, track: target.index, tracks: tracks, clips: placed, stems: names,
        arrangement: target.arrangement });
    var where = target.arrangement ? " at beat " + round3(target.position) : " (session, scene " + (target.scene + 1) + ")";
    setStatus("Placed " + placed.length + " stems on tracks " + (target.index + 1) + "-" + (target.index + placed.length) +
        where + (muted ? "; source clip muted (Ctrl+Z undoes it all)" : "") + timing +
        (skipped.length ? "; not fetched: " + skipped.join(", ") : "") + (failure ? "; stopped at " + failure : ""));
    return true;
}
