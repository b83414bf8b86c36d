// m2ugen_pure.js -- pure functions of the device (no Live, no Max: unit-tested on their own)
//
// Part of the M2UGen Max for Live device: m2ugen_device.js include()s it into its own [js] scope
// (Max's JS include: the code runs in the including file's global scope), so it shares that file's
// state, env and helpers. Plain ES5 (SpiderMonkey 1.8.5).


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


function fileUrl(path) {
    return "file://" + encodeURI(path.charAt(0) === "/" ? path : "/" + path);
}

// Bytes of a string in UTF-8 (what OSC carries).
function utf8Length(text) {
    try {
        return unescape(encodeURIComponent(text)).length;
    } catch (e) {
        return text.length * 3;   // a lone UTF-16 half: count the worst case
    }
}

// Bytes of the OSC message [udpsend] makes of `address args...`: the address and a type tag string,
// each NUL-terminated and padded to 4 bytes, 4 bytes per int / float, strings like the address.
function oscSize(address, args) {
    var pad = function (n) { return Math.ceil((n + 1) / 4) * 4; };
    var size = pad(utf8Length(String(address))) + pad(1 + args.length);
    for (var i = 0; i < args.length; i++) {
        size += typeof args[i] === "number" ? 4 : pad(utf8Length(String(args[i])));
    }
    return size;
}

// Song.file_path: missing in Live 11.3.25 to 11.3.41 (and not relied on before 11.3.25, which cannot
// import results anyway); present in 11.3.42+ and 12.
function hasSongFilePath(major, minor, bugfix) {
    if (major !== 11) return major > 11;
    return minor > 3 || (minor === 3 && bugfix >= 42);
}

// How a warped clip's region (start_marker..end_marker, beats) sits on its file: {span (beats),
// seconds, markers: [[beat, second], ...] from the region's start, (0, 0) first and (span, seconds)
// last, with the clip's warp markers between}. A result of the region's length placed with these warp
// markers spans the same beats at the same feel (placeResult).
function regionWarp(markers, startBeat, endBeat, tempo) {
    var s0 = beatsToFileSeconds(startBeat, true, markers, tempo);
    var s1 = beatsToFileSeconds(endBeat, true, markers, tempo);
    var out = [[0, 0]];
    for (var i = 0; i < markers.length; i++) {
        var b = markers[i].beat_time;
        if (b > startBeat + 1e-6 && b < endBeat - 1e-6) {
            out.push([Math.round((b - startBeat) * 1e6) / 1e6, Math.round((markers[i].sample_time - s0) * 1e6) / 1e6]);
        }
    }
    out.push([Math.round((endBeat - startBeat) * 1e6) / 1e6, Math.round((s1 - s0) * 1e6) / 1e6]);
    return { span: endBeat - startBeat, seconds: s1 - s0, markers: out };
}
