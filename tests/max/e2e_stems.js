// End to end for issue 26: the device JS (as Max's [js] runs it) with the LOM stub, over real UDP/OSC,
// against the real OSC bridge and a job server whose separator is exact for the test's mix. Started by
// tests/test_stems_clients.py, which passes M2U_BRIDGE_PORT, M2U_MIX (the mix WAV), M2U_MIX_SECONDS,
// M2U_SET_DIR and M2U_LOM_NAMES, and checks the files this prints (M2U_STEM / M2U_EDIT lines).
"use strict";

const test = require("node:test");
const { after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const path = require("path");
const harness = require("./harness");

const requiredEnv = (name) => harness.requiredEnv(name, "tests/test_stems_clients.py");
const BRIDGE_PORT = Number(requiredEnv("M2U_BRIDGE_PORT"));
const MIX = requiredEnv("M2U_MIX");
const MIX_SECONDS = Number(requiredEnv("M2U_MIX_SECONDS"));
const SET_DIR = requiredEnv("M2U_SET_DIR");
const RESULTS_DIR = path.join(SET_DIR, "Samples", "M2UGen");
const JOB_TIMEOUT_MS = 90000;

const devices = [];
after(async () => {
    for (const d of devices) await d.close();
});

function startDevice(worldOptions) {
    return harness.startUdpDevice(devices, BRIDGE_PORT, SET_DIR, worldOptions, false);
}

test("Stems through the real bridge: four stem tracks next to the clip, their files in the Set's folder", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 2, tracks: 3, view: "Session" });
    const source = world.selectAudioClip({ file_path: MIX, name: "Mix", warping: 0, start_marker: 0, end_marker: MIX_SECONDS,
        start_time: 8 }, { track: 0 });
    dev.send("stems");
    await udp.waitFor(() => /Placed \d+ stems|Error |could not/.test(dev.lastStatus()), JOB_TIMEOUT_MS, "the stems");
    assert.match(dev.lastStatus(), /Placed 4 stems on tracks 2-5 at beat 8; source clip muted/);
    const tracks = world.song.values.tracks.slice(1, 5);
    assert.deepEqual(tracks.map((t) => t.values.name), ["Mix - drums", "Mix - bass", "Mix - other", "Mix - vocals"]);
    for (const t of tracks) {
        const clip = t.values.arrangement_clips[0];
        assert.equal(clip.values.start_time, 8);
        assert.equal(path.dirname(clip.values.file_path), RESULTS_DIR);
        assert.ok(fs.statSync(clip.values.file_path).size > 44);
        console.log(`M2U_STEM ${t.values.name.split(" - ")[1]} ${clip.values.file_path}`);
    }
    assert.equal(source.values.muted, 1);
});

test("Edit with op remove and stem drums (no prompt typed) through the real bridge", async () => {
    const { world, dev, udp } = await startDevice({ deviceTrack: 0, tracks: 2, view: "Arranger" });
    world.selectAudioClip({ file_path: MIX, warping: 0, start_marker: 0, end_marker: MIX_SECONDS, start_time: 4 }, { track: 1 });
    dev.send("mode", "edit");
    dev.send("stem_op", "remove");
    dev.send("stem", 0);
    dev.send("go");
    await udp.waitFor(() => /Placed on track|Error |could not/.test(dev.lastStatus()), JOB_TIMEOUT_MS, "the edit");
    assert.match(dev.lastStatus(), /Placed on track/);
    const clip = world.song.values.tracks[1].values.arrangement_clips[0];
    assert.match(world.song.values.tracks[1].values.name, /remove the drums/);
    console.log(`M2U_EDIT ${clip.values.file_path}`);
});
