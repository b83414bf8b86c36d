// A small Live Object Model for running the device JS under node.
//
// Every class, property and function the stub accepts is checked against the names extracted from
// the `ableton-live-stubs` package (tests/test_max_device.py writes them to the JSON file named by
// $M2U_LOM_NAMES): a path step must be a property of the class, `get` a property, `set` a property
// with a setter, `call` a function. The values behave like Max's LiveAPI: `get` returns an array,
// object references come back as ["id", n], `path` is quoted and `unquotedpath` is not.
// Changing the Set from inside an observer callback throws, as Max refuses it.
//
// Host behaviour modelled beyond names (sources beside each):
// - warping: audio clips map clip beats to file seconds through warp markers (Clip.warp_markers,
//   add_warp_marker, remove_warp_marker); an unwarped clip plays the file at its own speed, so it spans
//   seconds × tempo / 60 beats; arrangement clips have start_time / end_time in beats.
// - Song.file_path is missing in Live 11.3.25 to 11.3.41 (issue 22; the PhotonicVelocity/LiveAPI stubs
//   of those versions have no Song.file_path): reading it there fails.
// - Track.create_midi_clip (arrangement MIDI clips) reaches Max for Live from 12.1.10 (release notes,
//   shared/docs/daw-bridges.md §3.3).
// - undo steps: Song.begin_undo_step / end_undo_step group the changes made between them.
// - clip markers (cycling74 LOM Clip, docs.cycling74.com/apiref/lom/clip): start_marker "cannot be set
//   behind the end marker", end_marker "cannot be set before the start marker"; loop_start / loop_end
//   are "for looped clips: loop start / end; for unlooped clips: clip start / end" (the stub mirrors the
//   markers there) and a loop start at or after the loop end is refused; looping: "unwarped audio cannot
//   be looped" (Clip.looping stub docstring: "Only Warped Audio Clips or MIDI Clip can be looped"). The
//   unit is beats when warped, seconds when not (stub docstrings "unit depends on warping"): switching
//   warping converts them through the clip's warp markers, as Live keeps where they sit in the file.
// - Track.create_audio_clip / ClipSlot.create_audio_clip exist from Live 11.3.25 and 12.0.5
//   (shared/docs/daw-bridges.md §3.3): calling them before throws, as calling a missing function does.
// - Track.color / Clip.color: RGB ints (stub docstrings "color of the Track / Clip (RGB)").
"use strict";

const fs = require("fs");

function loadNames() {
    const file = process.env.M2U_LOM_NAMES;
    if (!file) {
        throw new Error("M2U_LOM_NAMES is not set: run these tests through tests/test_max_device.py, " +
            "which extracts the LOM names from ableton-live-stubs");
    }
    return JSON.parse(fs.readFileSync(file, "utf8"));
}

const ROOTS = { live_set: "Song", live_app: "Application", this_device: "Device" };

class World {
    constructor(options) {
        const o = options || {};
        this.names = o.names || loadNames();
        this.version = o.version || [12, 1, 10];
        this.objects = new Map(); // id -> {id, cls, values, observers}
        this.nextId = 1;
        this.log = [];            // every set/call, in order: {op, path, name, args}
        this.inNotification = false;
        this.failImport = o.failImport || null; // null | "throw" | "silent"
        this.fileExists = o.fileExists || ((p) => fs.existsSync(p));
        this.defaultFileSeconds = o.fileSeconds || 2.0; // length of a file the stub cannot read as WAV
        this.undo = { depth: 0, steps: [] };             // begin_undo_step / end_undo_step
        this.maxConsole = [];                            // LiveAPI errors Max would print

        this.app = this.make("Application", {});
        this.app.values.view = this.make("Application.View", { focused_document_view: o.view || "Arranger" });
        this.song = this.make("Song", {
            tempo: o.tempo || 120.0, signature_numerator: 4, signature_denominator: 4,
            loop: o.loop === undefined ? 1 : o.loop, loop_start: o.loopStart || 16.0, loop_length: o.loopLength || 8.0,
            current_song_time: o.songTime || 4.0, is_playing: 0, tracks: [], scenes: [],
            file_path: o.setPath || "",
        });
        for (let i = 0; i < (o.scenes || 4); i++) this.song.values.scenes.push(this.make("Scene", { name: "" }));
        const songView = this.make("Song.View", {
            detail_clip: null, selected_scene: this.song.values.scenes[o.selectedScene || 0], selected_track: null,
        });
        this.song.values.view = songView;
        for (let i = 0; i < (o.tracks || 3); i++) this.addTrack(this.song.values.tracks.length, "Track " + (i + 1));
        const deviceTrack = this.song.values.tracks[o.deviceTrack === undefined ? 1 : o.deviceTrack];
        this.device = this.addDevice(o.deviceTrack === undefined ? 1 : o.deviceTrack);
        songView.values.selected_track = deviceTrack;
        this.globals = {}; // Max's Global objects, shared by every [js] of this Live
    }

    // Another M2UGen device on track `trackIndex` (its `this_device`).
    addDevice(trackIndex) {
        const track = this.song.values.tracks[trackIndex];
        const device = this.make("Device", { name: "M2UGen", canonical_parent: track });
        track.values.devices.push(device);
        return device;
    }

    addScene() {
        this.song.values.scenes.push(this.make("Scene", { name: "" }));
        for (const track of this.song.values.tracks) {
            track.values.clip_slots.push(this.make("ClipSlot", { has_clip: 0, clip: null, canonical_parent: track }));
        }
    }

    make(cls, values) {
        if (!this.names.classes[cls]) throw new Error(`LOM stub: class ${cls} is not in ableton-live-stubs`);
        const obj = { id: this.nextId++, cls, values, observers: [] };
        this.objects.set(obj.id, obj);
        return obj;
    }

    addTrack(index, name, midi) {
        const track = this.make("Track", {
            name, clip_slots: [], arrangement_clips: [], devices: [], has_audio_input: midi ? 0 : 1,
            has_midi_input: midi ? 1 : 0, canonical_parent: this.song, color: 0x8a8a8a,
        });
        for (let s = 0; s < this.song.values.scenes.length; s++) {
            track.values.clip_slots.push(this.make("ClipSlot", { has_clip: 0, clip: null, canonical_parent: track }));
        }
        this.song.values.tracks.splice(index, 0, track);
        return track;
    }

    // An audio clip with a file, put in the detail view (the "selected clip").
    selectAudioClip(values, where) {
        const v = Object.assign({ is_audio_clip: 1, is_midi_clip: 0, is_arrangement_clip: 0, warping: 0, name: "",
            start_time: 0, muted: 0, looping: 0, color: 0xff3636 }, values);
        let clip;
        if (where && where.track !== undefined && where.slot !== undefined) {
            const slot = this.song.values.tracks[where.track].values.clip_slots[where.slot];
            clip = this.make("Clip", Object.assign(v, { canonical_parent: slot }));
            slot.values.clip = clip;
            slot.values.has_clip = 1;
        } else {
            const track = this.song.values.tracks[where && where.track !== undefined ? where.track : 0];
            clip = this.make("Clip", Object.assign(v, { is_arrangement_clip: 1, canonical_parent: track }));
            track.values.arrangement_clips.push(clip);
        }
        takeMarkers(clip);
        this.song.values.view.values.detail_clip = clip;
        return clip;
    }

    // A MIDI clip in a session slot, put in the detail view. notes: [{pitch, start_time, duration,
    // velocity, mute}] in beats from the clip's start; get_notes_extended answers them as JSON text.
    selectMidiClip(notes, values, where) {
        const w = where || { track: 0, slot: 0 };
        const slot = this.song.values.tracks[w.track].values.clip_slots[w.slot];
        const clip = this.make("Clip", Object.assign({
            is_audio_clip: 0, is_midi_clip: 1, is_arrangement_clip: 0, name: "", start_marker: 0, end_marker: 4,
            canonical_parent: slot, notes: notes || [], muted: 0, start_time: 0,
        }, values));
        slot.values.clip = clip;
        slot.values.has_clip = 1;
        this.song.values.view.values.detail_clip = clip;
        return clip;
    }

    // A MIDI clip in the arrangement of track `t` at `start_time` (beats), put in the detail view.
    selectArrangementMidiClip(notes, t, startTime, values) {
        const track = this.song.values.tracks[t];
        const clip = this.make("Clip", Object.assign({
            is_audio_clip: 0, is_midi_clip: 1, is_arrangement_clip: 1, name: "", start_marker: 0, end_marker: 4,
            canonical_parent: track, notes: notes || [], muted: 0, start_time: startTime,
        }, values));
        track.values.arrangement_clips.push(clip);
        this.song.values.view.values.detail_clip = clip;
        return clip;
    }

    // Seconds of audio in a file: its WAV header when it is a readable WAV, else the default.
    fileSeconds(path) {
        try {
            const data = fs.readFileSync(path);
            if (data.length >= 44 && data.toString("ascii", 0, 4) === "RIFF" && data.toString("ascii", 8, 12) === "WAVE") {
                let off = 12, byteRate = 0;
                while (off + 8 <= data.length) {
                    const id = data.toString("ascii", off, off + 4);
                    const size = data.readUInt32LE(off + 4);
                    if (id === "fmt ") byteRate = data.readUInt32LE(off + 16);
                    if (id === "data" && byteRate > 0) return Math.min(size, data.length - off - 8) / byteRate;
                    off += 8 + size + (size % 2);
                }
            }
        } catch (e) {
            // not readable: the default
        }
        return this.defaultFileSeconds;
    }

    versionAtLeast(major, minor, bugfix) {
        const [a, b, c] = this.version;
        return a !== major ? a > major : b !== minor ? b > minor : c >= bugfix;
    }

    // Live's canonical path of an object ("live_set tracks 2 clip_slots 0 clip").
    pathOf(obj) {
        if (obj === this.song) return "live_set";
        if (obj === this.app) return "live_app";
        if (obj === this.app.values.view) return "live_app view";
        if (obj === this.song.values.view) return "live_set view";
        const tracks = this.song.values.tracks;
        for (let t = 0; t < tracks.length; t++) {
            const tr = tracks[t];
            if (tr === obj) return `live_set tracks ${t}`;
            const d = tr.values.devices.indexOf(obj);
            if (d >= 0) return `live_set tracks ${t} devices ${d}`;
            const a = tr.values.arrangement_clips.indexOf(obj);
            if (a >= 0) return `live_set tracks ${t} arrangement_clips ${a}`;
            for (let s = 0; s < tr.values.clip_slots.length; s++) {
                const slot = tr.values.clip_slots[s];
                if (slot === obj) return `live_set tracks ${t} clip_slots ${s}`;
                if (slot.values.clip === obj) return `live_set tracks ${t} clip_slots ${s} clip`;
            }
        }
        const sc = this.song.values.scenes.indexOf(obj);
        if (sc >= 0) return `live_set scenes ${sc}`;
        return `id ${obj.id}`;
    }

    classNames(cls) {
        const c = this.names.classes[cls];
        if (!c) throw new Error(`LOM stub: class ${cls} is not in ableton-live-stubs`);
        return c;
    }

    checkProperty(obj, name) {
        const c = this.classNames(obj.cls);
        if (!Object.prototype.hasOwnProperty.call(c.properties, name)) {
            throw new Error(`LOM stub: ${obj.cls} has no property '${name}' in ableton-live-stubs`);
        }
    }

    checkFunction(obj, name) {
        const c = this.classNames(obj.cls);
        if (c.methods.indexOf(name) < 0) {
            throw new Error(`LOM stub: ${obj.cls} has no function '${name}' in ableton-live-stubs`);
        }
    }

    resolve(path, thisDevice) {
        const words = String(path).replace(/"/g, "").trim().split(/\s+/);
        if (words[0] === "id") {
            const obj = this.objects.get(Number(words[1]));
            return obj || null;
        }
        if (!ROOTS[words[0]]) throw new Error(`LOM stub: unknown root '${words[0]}' in path '${path}'`);
        let obj = words[0] === "live_set" ? this.song : words[0] === "live_app" ? this.app : (thisDevice || this.device);
        for (let i = 1; i < words.length; i++) {
            if (!obj) return null;
            const name = words[i];
            this.checkProperty(obj, name);
            let v = obj.values[name];
            if (Array.isArray(v)) {
                const index = Number(words[++i]);
                if (!Number.isInteger(index)) throw new Error(`LOM stub: '${name}' needs an index in '${path}'`);
                v = v[index];
            }
            if (v === undefined) throw new Error(`LOM stub: ${obj.cls}.${name} is not modelled by the stub`);
            obj = v;
        }
        return obj;
    }

    guardChange(what) {
        if (this.inNotification) throw new Error(`Changes cannot be triggered by notifications (${what})`);
    }

    notify(obj, name) {
        this.inNotification = true;
        try {
            for (const cb of obj.observers.filter((o) => o.property === name)) cb.fn([name].concat(this.getValue(obj, name)));
        } finally {
            this.inNotification = false;
        }
    }

    getValue(obj, name) {
        this.checkProperty(obj, name);
        if (obj.cls === "Song" && name === "file_path" && this.version[0] === 11 && this.versionAtLeast(11, 3, 25) &&
            !this.versionAtLeast(11, 3, 42)) {
            // Max prints the LiveAPI error in its console; the get gives nothing back
            this.maxConsole.push(`get: Song has no property 'file_path' in Live ${this.version.join(".")}`);
            return [];
        }
        if (obj.cls === "Clip" && (name === "loop_start" || name === "loop_end") && !obj.values.looping) {
            return [obj.values[name === "loop_start" ? "start_marker" : "end_marker"]];   // unlooped: the clip's start / end
        }
        if (obj.cls === "Clip") {
            const computed = clipComputed(this, obj, name);
            if (computed !== undefined) return [computed];
        }
        const v = obj.values[name];
        if (v === undefined) throw new Error(`LOM stub: ${obj.cls}.${name} is not modelled by the stub`);
        if (v === null) return ["id", 0];
        if (Array.isArray(v)) return [].concat(...v.map((o) => ["id", o.id]));
        if (typeof v === "object" && v.id) return ["id", v.id];
        return [v];
    }

    setValue(obj, name, value) {
        this.checkProperty(obj, name);
        const c = this.classNames(obj.cls);
        if (c.settable.indexOf(name) < 0) throw new Error(`LOM stub: ${obj.cls}.${name} is read-only in ableton-live-stubs`);
        this.guardChange(`set ${name}`);
        if (obj.cls === "Clip" && name === "warping" && Number(value) === 1 && !obj.values.warping && obj.values.is_audio_clip &&
            !(obj.markers && obj.markers.length)) {
            // Warp switched on: Live keeps the clip's speed, so the markers say the file plays at the Set's tempo
            // (file seconds × tempo / 60 beats); cycling74 LOM Clip.warp_markers: beat_time / sample_time (seconds).
            const seconds = this.fileSeconds(obj.values.file_path);
            obj.markers = [{ beat_time: 0, sample_time: 0 }, { beat_time: seconds * this.song.values.tempo / 60, sample_time: seconds }];
        }
        if (obj.cls === "Clip" && setClipTiming(this, obj, name, value)) return;
        obj.values[name] = typeof value === "boolean" ? Number(value) : value;
    }

    callFunction(obj, name, args) {
        this.checkFunction(obj, name);
        const impl = FUNCTIONS[`${obj.cls}.${name}`];
        if (!impl) throw new Error(`LOM stub: ${obj.cls}.${name} exists in Live but the stub does not implement it`);
        return impl(this, obj, args);
    }
}

const MARKERS = ["start_marker", "end_marker", "loop_start", "loop_end"];

// Clip markers and looping as Live sets them (rules in the header); true when handled here.
function setClipTiming(world, clip, name, value) {
    const v = Number(value);
    const vals = clip.values;
    if (name === "warping" && vals.is_audio_clip && !!v !== !!vals.warping && vals.start_marker !== undefined &&
        clip.markers && clip.markers.length >= 2) {
        // the markers stay where they sit in the file: beats <-> seconds through the warp markers
        for (const m of MARKERS) {
            if (vals[m] !== undefined) vals[m] = v ? markerBeats(clip.markers, vals[m]) : markerSeconds(clip.markers, vals[m]);
        }
        vals.warping = v ? 1 : 0;
        if (!v) vals.looping = 0;   // unwarped audio cannot be looped
        return true;
    }
    if (name === "looping") {
        if (v && vals.is_audio_clip && !vals.warping) throw new Error("looping: unwarped audio cannot be looped");
        vals.looping = v ? 1 : 0;
        return true;
    }
    if (MARKERS.indexOf(name) < 0) return false;
    if (!Number.isFinite(v)) throw new Error(`${name}: not a number: ${value}`);
    let which = name;
    if (!vals.looping && (name === "loop_start" || name === "loop_end")) which = name === "loop_start" ? "start_marker" : "end_marker";
    if (which === "start_marker" && !(v < vals.end_marker)) throw new Error(`start_marker ${v} cannot be set behind the end marker ${vals.end_marker}`);
    if (which === "end_marker" && !(v > vals.start_marker)) throw new Error(`end_marker ${v} cannot be set before the start marker ${vals.start_marker}`);
    if (which === "loop_start" && !(v < vals.loop_end)) throw new Error(`loop_start ${v} is not before the loop end ${vals.loop_end}`);
    if (which === "loop_end" && !(v > vals.loop_start)) throw new Error(`loop_end ${v} is not after the loop start ${vals.loop_start}`);
    vals[which] = v;
    clip.markersSet = true;
    return true;
}

// Clip warp markers given as M4L returns them (JSON text {"warp_markers": [...]}) -> clip.markers.
function takeMarkers(clip) {
    const wm = clip.values.warp_markers;
    if (typeof wm === "string") clip.markers = JSON.parse(wm).warp_markers || [];
    delete clip.values.warp_markers;
    if (!clip.markers) clip.markers = [];
}

// Beats of clip time -> seconds of its file, through the warp markers (piecewise linear, the ends
// extended by the first / last segment), as Live plays a warped clip.
function markerSeconds(markers, beats) {
    let i = 1;
    while (i < markers.length - 1 && beats > markers[i].beat_time) i++;
    const a = markers[i - 1], b = markers[i];
    return a.sample_time + (beats - a.beat_time) * (b.sample_time - a.sample_time) / (b.beat_time - a.beat_time);
}

function markerBeats(markers, seconds) {
    let i = 1;
    while (i < markers.length - 1 && seconds > markers[i].sample_time) i++;
    const a = markers[i - 1], b = markers[i];
    return a.beat_time + (seconds - a.sample_time) * (b.beat_time - a.beat_time) / (b.sample_time - a.sample_time);
}

// The length in beats an audio clip made from a whole file spans on the timeline: through its warp
// markers when warped, else the file at its own speed at the Set's tempo.
function fileClipBeats(world, clip) {
    const seconds = world.fileSeconds(clip.values.file_path);
    if (clip.values.warping && clip.markers && clip.markers.length >= 2) return markerBeats(clip.markers, seconds) - markerBeats(clip.markers, 0);
    return seconds * world.song.values.tempo / 60;
}

// Properties Live computes (LOM Clip): warp_markers (a dict, JSON text in M4L), length (beats), end_time
// (arrangement: start_time + length).
function clipComputed(world, clip, name) {
    if (name === "warp_markers") return JSON.stringify({ warp_markers: clip.markers || [] });
    if (name !== "length" && name !== "end_time") return undefined;
    let length;
    if (clip.values.is_midi_clip) length = clip.values.length || (clip.values.end_marker - clip.values.start_marker);
    else if (clip.values.from_file && !clip.markersSet) length = fileClipBeats(world, clip);
    else if (clip.values.from_file && clip.values.warping) {
        length = clip.values.end_marker - clip.values.start_marker;
    } else if (clip.values.from_file) {
        length = (clip.values.end_marker - clip.values.start_marker) * world.song.values.tempo / 60;
    }
    else {
        const span = clip.values.end_marker - clip.values.start_marker;   // beats if warped, seconds if not
        length = clip.values.warping ? span : span * world.song.values.tempo / 60;
    }
    return name === "length" ? length : clip.values.start_time + length;
}

function needWarpedAudio(clip, what) {
    if (!clip.values.is_audio_clip) throw new Error(`${what}: available for audio clips only`);
    if (!clip.values.warping) throw new Error(`${what}: the clip is not warped`);
}

function checkAudioFile(world, path) {
    if (typeof path !== "string" || path.charAt(0) !== "/") throw new Error(`invalid file path: ${path}`);
    if (!world.fileExists(path)) throw new Error(`file not found: ${path}`);
}

// An imported file: Live warps it by default and auto-warps it at the tempo it guesses for the file
// (Live manual, "Auto-Warp Long Samples"); the stub guesses 120 BPM, so a clip that should play at the
// file's own speed must be set to warping 0.
const GUESSED_BPM = 120;
function makeClip(world, parent, path, extra) {
    const clip = world.make("Clip", Object.assign({
        file_path: path, is_audio_clip: 1, is_midi_clip: 0, is_arrangement_clip: 0, warping: 1, name: "", start_time: 0,
        canonical_parent: parent, muted: 0, from_file: 1, color: 0x8a8a8a,
    }, extra));
    const seconds = world.fileSeconds(path);
    clip.markers = [{ beat_time: 0, sample_time: 0 }, { beat_time: seconds * GUESSED_BPM / 60, sample_time: seconds }];
    // the whole file, unlooped (an arrangement clip of a file plays it once). ASSUMED: the LOM documents
    // no starting state for create_audio_clip's clip; the device sets looping, markers and warping itself
    // (setResultTiming), and max_device/README.md lists this among what a real-Live run must confirm
    Object.assign(clip.values, { start_marker: 0, end_marker: seconds * GUESSED_BPM / 60, loop_start: 0,
        loop_end: seconds * GUESSED_BPM / 60, looping: 0 });
    return clip;
}

// Track / ClipSlot.create_audio_clip: Live 11.3.25+ and 12.0.5+ (shared/docs/daw-bridges.md §3.3).
function needAudioClipImport(world, what) {
    const [a] = world.version;
    const ok = a > 12 || (a === 12 && world.versionAtLeast(12, 0, 5)) || (a === 11 && world.versionAtLeast(11, 3, 25));
    if (!ok) throw new Error(`${what} does not exist in Live ${world.version.join(".")}`);
}

// Behaviour of the functions the device calls (names must also exist in the stubs).
const FUNCTIONS = {
    "Application.get_major_version": (w) => w.version[0],
    "Application.get_minor_version": (w) => w.version[1],
    "Application.get_bugfix_version": (w) => w.version[2],
    "Song.create_audio_track": (w, song, args) => {
        w.guardChange("create_audio_track");
        const n = song.values.tracks.length;
        let index = args.length ? Number(args[0]) : n;
        if (index === -1) index = n;
        if (!Number.isInteger(index) || index < 0 || index > n) throw new Error(`create_audio_track: index ${args[0]} out of range`);
        const t = w.addTrack(index, `${index + 1}-Audio`);
        return ["id", t.id];
    },
    "Song.create_midi_track": (w, song, args) => {
        w.guardChange("create_midi_track");
        const n = song.values.tracks.length;
        let index = args.length ? Number(args[0]) : n;
        if (index === -1) index = n;
        if (!Number.isInteger(index) || index < 0 || index > n) throw new Error(`create_midi_track: index ${args[0]} out of range`);
        const t = w.addTrack(index, `${index + 1}-MIDI`, true);
        return ["id", t.id];
    },
    "ClipSlot.create_clip": (w, slot, args) => {
        w.guardChange("create_clip");
        if (args.length !== 1 || !(Number(args[0]) > 0)) throw new Error(`create_clip takes (length > 0), got ${args}`);
        if (slot.values.has_clip) throw new Error("create_clip: the clip slot is not empty");
        if (!slot.values.canonical_parent.values.has_midi_input) throw new Error("create_clip: not a MIDI track");
        const clip = w.make("Clip", { is_audio_clip: 0, is_midi_clip: 1, is_arrangement_clip: 0, name: "",
            start_marker: 0, end_marker: Number(args[0]), length: Number(args[0]), canonical_parent: slot, notes: [] });
        slot.values.clip = clip;
        slot.values.has_clip = 1;
        return ["id", clip.id];
    },
    "Clip.get_notes_extended": (w, clip, args) => {
        if (args.length !== 4) throw new Error(`get_notes_extended takes (from_pitch, pitch_span, from_time, time_span), got ${args.length}`);
        if (!clip.values.is_midi_clip) throw new Error("get_notes_extended: not a MIDI clip");
        const [p0, pn, t0, tn] = args.map(Number);
        const hit = clip.values.notes.filter((n) => n.pitch >= p0 && n.pitch < p0 + pn &&
            n.start_time < t0 + tn && n.start_time + n.duration > t0);
        return JSON.stringify({ notes: hit.map((n, i) => Object.assign({ note_id: i + 1, probability: 1 }, n)) });
    },
    "Clip.add_new_notes": (w, clip, args) => {
        w.guardChange("add_new_notes");
        const d = args[0];
        if (args.length !== 1 || !d || !Array.isArray(d.notes)) throw new Error("add_new_notes takes one {notes: [...]} dict");
        if (!clip.values.is_midi_clip) throw new Error("add_new_notes: not a MIDI clip");
        for (const n of d.notes) {
            for (const k of ["pitch", "start_time", "duration"]) {
                if (typeof n[k] !== "number" || !Number.isFinite(n[k])) throw new Error(`add_new_notes: note ${k} must be a number`);
            }
            if (!Number.isInteger(n.pitch) || n.pitch < 0 || n.pitch > 127 || n.duration <= 0) throw new Error("add_new_notes: bad note");
            clip.values.notes.push(Object.assign({}, n));
        }
    },
    "Song.begin_undo_step": (w) => {
        if (w.undo.depth++ === 0) w.undo.steps.push(w.log.length);
    },
    "Song.end_undo_step": (w) => {
        if (w.undo.depth === 0) throw new Error("end_undo_step without begin_undo_step");
        w.undo.depth--;
    },
    // LOM Clip.add_warp_marker: a dict {beat_time, sample_time (seconds)}; "adds the specified warp marker,
    // if possible" -- the stub refuses markers that would not keep beats and seconds both increasing.
    "Clip.add_warp_marker": (w, clip, args) => {
        w.guardChange("add_warp_marker");
        needWarpedAudio(clip, "add_warp_marker");
        const m = args[0];
        if (args.length !== 1 || !m || typeof m.beat_time !== "number") throw new Error("add_warp_marker takes one {beat_time, sample_time} dict");
        const sample = typeof m.sample_time === "number" ? m.sample_time : markerSeconds(clip.markers, m.beat_time);
        const list = clip.markers.concat([{ beat_time: m.beat_time, sample_time: sample }]).sort((a, b) => a.beat_time - b.beat_time);
        for (let i = 1; i < list.length; i++) {
            if (!(list[i].beat_time > list[i - 1].beat_time && list[i].sample_time > list[i - 1].sample_time)) {
                throw new Error(`add_warp_marker: a marker at beat ${m.beat_time} / ${sample} s is not possible here`);
            }
        }
        clip.markers = list;
    },
    "Clip.remove_warp_marker": (w, clip, args) => {
        w.guardChange("remove_warp_marker");
        needWarpedAudio(clip, "remove_warp_marker");
        const i = clip.markers.findIndex((m) => Math.abs(m.beat_time - Number(args[0])) < 1e-9);
        if (i < 0) throw new Error(`remove_warp_marker: no marker at beat ${args[0]}`);
        clip.markers.splice(i, 1);
    },
    // Track.create_midi_clip(start_time, length): an arrangement MIDI clip (Max for Live from 12.1.10).
    "Track.create_midi_clip": (w, track, args) => {
        w.guardChange("create_midi_clip");
        if (!w.versionAtLeast(12, 1, 10)) throw new Error("create_midi_clip: not available to Max for Live before Live 12.1.10");
        if (!track.values.has_midi_input) throw new Error("create_midi_clip: not a MIDI track");
        const [start, length] = args.map(Number);
        if (!(start >= 0 && start <= 1576800) || !(length > 0)) throw new Error(`create_midi_clip: bad start ${args[0]} / length ${args[1]}`);
        const clip = w.make("Clip", { is_audio_clip: 0, is_midi_clip: 1, is_arrangement_clip: 1, name: "", start_marker: 0,
            end_marker: length, length, start_time: start, canonical_parent: track, notes: [], muted: 0 });
        track.values.arrangement_clips.push(clip);
        return ["id", clip.id];
    },
    // Track.duplicate_clip_to_arrangement(clip, destination_time): in M4L the clip goes as "id N".
    "Track.duplicate_clip_to_arrangement": (w, track, args) => {
        w.guardChange("duplicate_clip_to_arrangement");
        const words = String(args.length === 3 ? args[0] + " " + args[1] : args[0]).split(/\s+/);
        const src = words[0] === "id" ? w.objects.get(Number(words[1])) : null;
        if (!src || src.cls !== "Clip") throw new Error("duplicate_clip_to_arrangement: no such clip");
        if (!!src.values.is_midi_clip !== !!track.values.has_midi_input) throw new Error("duplicate_clip_to_arrangement: clip and track types differ");
        const time = Number(args[args.length - 1]);
        const copy = w.make("Clip", Object.assign({}, src.values, { is_arrangement_clip: 1, start_time: time, canonical_parent: track,
            notes: (src.values.notes || []).map((n) => Object.assign({}, n)) }));
        track.values.arrangement_clips.push(copy);
        return ["id", copy.id];
    },
    "ClipSlot.delete_clip": (w, slot) => {
        w.guardChange("delete_clip");
        if (!slot.values.has_clip) throw new Error("delete_clip: the slot is empty");
        slot.values.clip = null;
        slot.values.has_clip = 0;
    },
    "Song.create_scene": (w, song, args) => {
        w.guardChange("create_scene");
        if (Number(args[0]) !== -1) throw new Error(`create_scene: the stub only appends (index -1), got ${args[0]}`);
        w.addScene();
        return ["id", song.values.scenes[song.values.scenes.length - 1].id];
    },
    "Song.delete_track": (w, song, args) => {
        w.guardChange("delete_track");
        const index = Number(args[0]);
        if (!Number.isInteger(index) || index < 0 || index >= song.values.tracks.length) {
            throw new Error(`delete_track: index ${args[0]} out of range`);
        }
        song.values.tracks.splice(index, 1);
    },
    "Track.create_audio_clip": (w, track, args) => {
        w.guardChange("create_audio_clip");
        if (args.length !== 2) throw new Error(`Track.create_audio_clip takes (file_path, position), got ${args.length} args`);
        needAudioClipImport(w, "Track.create_audio_clip");
        const [path, position] = args;
        if (w.failImport === "throw") throw new Error("create_audio_clip: Live could not import the file");
        if (w.failImport === "silent") return undefined;
        checkAudioFile(w, path);
        if (typeof position !== "number" || position < 0 || position > 1576800) {
            throw new Error(`create_audio_clip: position ${position} outside [0, 1576800]`);
        }
        const clip = makeClip(w, track, path, { is_arrangement_clip: 1, start_time: position });
        track.values.arrangement_clips.push(clip);
        return ["id", clip.id];
    },
    "ClipSlot.create_audio_clip": (w, slot, args) => {
        w.guardChange("create_audio_clip");
        needAudioClipImport(w, "ClipSlot.create_audio_clip");
        if (args.length !== 1) throw new Error(`ClipSlot.create_audio_clip takes (file_path), got ${args.length} args`);
        if (slot.values.has_clip) throw new Error("create_audio_clip: the clip slot is not empty");
        if (w.failImport === "throw") throw new Error("create_audio_clip: Live could not import the file");
        if (w.failImport === "silent") return undefined;
        checkAudioFile(w, args[0]);
        const clip = makeClip(w, slot, args[0], {});
        slot.values.clip = clip;
        slot.values.has_clip = 1;
        return ["id", clip.id];
    },
};

// The LiveAPI class the device sees (Max: `new LiveAPI([callback], path)`).
function makeLiveAPI(world, thisDevice) {
    function LiveAPI(a, b) {
        const callback = typeof a === "function" ? a : null;
        const path = typeof a === "function" ? b : a;
        this._callback = callback;
        this._bind(path === undefined ? "" : path);
    }
    // Made from an id, `path` is the canonical path; made from a path, the stub gives that path back
    // as written (the conservative reading of Max's docs), so the device must not rely on more.
    LiveAPI.prototype._bind = function (path) {
        this._obj = path ? world.resolve(path, thisDevice) : null;
        const p = String(path).replace(/"/g, "").trim().replace(/\s+/g, " ");
        this._path = !this._obj ? "" : /^id /.test(p) ? world.pathOf(this._obj) : p;
    };
    Object.defineProperty(LiveAPI.prototype, "id", { get() { return this._obj ? this._obj.id : 0; } });
    Object.defineProperty(LiveAPI.prototype, "type", { get() { return this._obj ? this._obj.cls.split(".").pop() : ""; } });
    Object.defineProperty(LiveAPI.prototype, "unquotedpath", { get() { return this._path; } });
    Object.defineProperty(LiveAPI.prototype, "path", { get() { return this._obj ? `"${this._path}"` : ""; } });
    Object.defineProperty(LiveAPI.prototype, "property", {
        get() { return this._property || ""; },
        set(name) {
            this._need();
            world.checkProperty(this._obj, name);
            this._property = name;
            if (this._callback) this._obj.observers.push({ property: name, fn: this._callback.bind(this) });
        },
    });
    LiveAPI.prototype._need = function () {
        if (!this._obj) throw new Error("LOM stub: LiveAPI object has no valid path");
    };
    LiveAPI.prototype.goto = function (path) { this._bind(path); };
    LiveAPI.prototype.get = function (name) {
        this._need();
        return world.getValue(this._obj, name);
    };
    LiveAPI.prototype.getcount = function (name) {
        this._need();
        world.checkProperty(this._obj, name);
        const v = this._obj.values[name];
        if (!Array.isArray(v)) throw new Error(`LOM stub: ${this._obj.cls}.${name} is not a list`);
        return v.length;
    };
    LiveAPI.prototype.set = function (name, value) {
        this._need();
        world.log.push({ op: "set", path: world.pathOf(this._obj), name, args: [value] });
        world.setValue(this._obj, name, value);
    };
    LiveAPI.prototype.call = function (name, ...args) {
        this._need();
        world.log.push({ op: "call", path: world.pathOf(this._obj), name, args });
        return world.callFunction(this._obj, name, args);
    };
    return LiveAPI;
}

module.exports = { World, makeLiveAPI, loadNames };
