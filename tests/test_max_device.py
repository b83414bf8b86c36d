"""The Max for Live device: node tests of its JS (LOM stub checked against ableton-live-stubs), the
built .amxd (chunks, JSON, known Max objects, reproducible), and end to end against the real OSC
bridge and job server (tiny preset)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_DIR = ROOT / "max_device"
TESTS_MAX = ROOT / "tests" / "max"
NODE = shutil.which("node")
# the device's JS: m2ugen_device.js and the files it include()s (Max's JS include, same scope)
DEVICE_FILES = ["m2ugen_device.js"] + re.findall(r'^include\("([^"]+)"\);', (MAX_DIR / "m2ugen_device.js").read_text(
    encoding="utf-8"), re.M)
DEVICE_JS_TEXT = "\n".join((MAX_DIR / name).read_text(encoding="utf-8") for name in DEVICE_FILES)


# ---------------------------------------------------------------------------------------------
# LOM names from ableton-live-stubs


def stubs_dir() -> Path:
    try:
        dist = metadata.distribution("ableton-live-stubs")
    except metadata.PackageNotFoundError:
        pytest.fail("ableton-live-stubs is not installed: pip install ableton-live-stubs==12.3.6.post8")
    d = Path(dist.locate_file("Live-stubs"))
    if not (d / "Song.pyi").is_file():
        pytest.fail(f"ableton-live-stubs has no Live-stubs/Song.pyi under {d}")
    return d


def _decorator_names(fn: ast.FunctionDef) -> list[str]:
    return [ast.unparse(d) for d in fn.decorator_list]


def extract_lom_names(directory: Path) -> dict:
    """{"classes": {"Song": {"properties": {name: annotation}, "settable": [...], "methods": [...],
    "bases": [...]}, "Song.View": {...}}} from the .pyi files; base-class members are merged in."""
    classes: dict[str, dict] = {}

    def visit(node: ast.ClassDef, prefix: str) -> None:
        name = prefix + node.name
        entry = {"properties": {}, "settable": [], "methods": [], "bases": [ast.unparse(b) for b in node.bases]}
        for item in node.body:
            if isinstance(item, ast.ClassDef):
                visit(item, name + ".")
            elif isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                decorators = _decorator_names(item)
                if "property" in decorators:
                    entry["properties"][item.name] = ast.unparse(item.returns) if item.returns else ""
                elif f"{item.name}.setter" in decorators:
                    entry["settable"].append(item.name)
                elif item.name not in entry["methods"]:
                    entry["methods"].append(item.name)
        classes[name] = entry

    for pyi in sorted(directory.glob("*.pyi")):
        for node in ast.parse(pyi.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                visit(node, "")

    def merged(name: str, seen: tuple = ()) -> dict:
        entry = classes[name]
        out = {"properties": {}, "settable": [], "methods": []}
        for base in entry["bases"]:
            base = base.split("[")[0].split(".")[-1]
            if base in classes and base not in seen:
                b = merged(base, seen + (name,))
                out["properties"].update(b["properties"])
                out["settable"] += [s for s in b["settable"] if s not in out["settable"]]
                out["methods"] += [m for m in b["methods"] if m not in out["methods"]]
        out["properties"].update(entry["properties"])
        out["settable"] += [s for s in entry["settable"] if s not in out["settable"]]
        out["methods"] += [m for m in entry["methods"] if m not in out["methods"]]
        return out

    version = metadata.version("ableton-live-stubs")
    return {"source": f"ableton-live-stubs {version}", "classes": {n: merged(n) for n in sorted(classes)}}


@pytest.fixture(scope="module")
def lom_names(tmp_path_factory) -> Path:
    names = extract_lom_names(stubs_dir())
    path = tmp_path_factory.mktemp("lom") / "lom_names.json"
    path.write_text(json.dumps(names, indent=1, sort_keys=True), encoding="utf-8")
    return path


def test_lom_names_extracted_from_stubs(lom_names):
    classes = json.loads(lom_names.read_text())["classes"]
    for cls in ("Song", "Song.View", "Track", "ClipSlot", "Clip", "Application", "Application.View", "Device", "Scene"):
        assert cls in classes, cls
    assert "create_audio_track" in classes["Song"]["methods"]
    assert "tempo" in classes["Song"]["properties"] and "tempo" in classes["Song"]["settable"]
    assert classes["Track"]["properties"]["clip_slots"] == "Vector[ClipSlot]"
    assert "file_path" in classes["Clip"]["properties"] and "file_path" not in classes["Clip"]["settable"]
    assert "canonical_parent" in classes["Device"]["properties"]
    assert "get_major_version" in classes["Application"]["methods"]


# ---------------------------------------------------------------------------------------------
# node tests of the device JS


def run_node(test_file: Path, env_extra: dict, timeout: float) -> subprocess.CompletedProcess:
    if NODE is None:
        pytest.fail("node is not installed (apt-get install nodejs; ./dev setup does it)")
    if not (MAX_DIR / "node_modules" / "acorn").is_dir():
        pytest.fail("max_device/node_modules is missing: run `npm install` in max_device/ (./dev setup does it)")
    env = dict(os.environ, **env_extra)
    return subprocess.run([NODE, "--test", "--test-reporter=tap", str(test_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tap_counts(out: str) -> tuple[int, int]:
    passed = re.search(r"^# pass (\d+)", out, re.M)
    failed = re.search(r"^# fail (\d+)", out, re.M)
    assert passed and failed, f"no TAP summary in node output:\n{out}"
    return int(passed.group(1)), int(failed.group(1))


def test_device_js_against_lom_stub(lom_names):
    r = run_node(TESTS_MAX / "device.test.js", {"M2U_LOM_NAMES": str(lom_names)}, timeout=120)
    out = r.stdout + r.stderr
    passed, failed = tap_counts(out)
    assert r.returncode == 0 and failed == 0, out
    assert passed >= 40, out


def test_device_behaves_like_live(lom_names):
    """Issue 22: warping, the Arrangement, Live versions, the 9,216-byte datagram limit, Learn in the
    background, late answers (tests/max/live_behaviour.test.js)."""
    r = run_node(TESTS_MAX / "live_behaviour.test.js", {"M2U_LOM_NAMES": str(lom_names)}, timeout=120)
    out = r.stdout + r.stderr
    passed, failed = tap_counts(out)
    assert r.returncode == 0 and failed == 0, out
    assert passed >= 19, out


def test_device_stems(lom_names):
    """Issue 26: Stems puts each stem on its own track next to its source, in time with it (warped clips,
    start-marker offsets, loops, Session and Arrangement, failed / cancelled jobs, 6 stems, old Lives), and
    Edit's stem options reach the submit (tests/max/stems.test.js)."""
    r = run_node(TESTS_MAX / "stems.test.js", {"M2U_LOM_NAMES": str(lom_names)}, timeout=120)
    out = r.stdout + r.stderr
    passed, failed = tap_counts(out)
    assert r.returncode == 0 and failed == 0, out
    assert passed >= 14, out


# ---------------------------------------------------------------------------------------------
# the built .amxd


def build(out: Path) -> Path:
    r = subprocess.run([sys.executable, str(MAX_DIR / "build_amxd.py"), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def read_chunks(data: bytes) -> list[tuple[str, bytes]]:
    chunks, off = [], 0
    while off < len(data):
        assert off + 8 <= len(data), f"truncated chunk header at byte {off}"
        tag = data[off:off + 4].decode("ascii")
        (size,) = struct.unpack("<I", data[off + 4:off + 8])
        assert off + 8 + size <= len(data), f"chunk {tag} runs past the end of the file"
        chunks.append((tag, data[off + 8:off + 8 + size]))
        off += 8 + size
    return chunks


def all_boxes(patcher: dict):
    for entry in patcher["boxes"]:
        box = entry["box"]
        yield box
        if "patcher" in box:
            yield from all_boxes(box["patcher"])


def object_name(box: dict) -> str:
    if box["maxclass"] == "newobj":
        return box["text"].split()[0]
    return box["maxclass"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("amxd")
    return build(d / "a" / "M2UGen.amxd"), build(d / "b" / "M2UGen.amxd")


def test_amxd_is_reproducible(built):
    a, b = built
    assert a.read_bytes() == b.read_bytes()
    # every file of the device JS (the [js] file and what it includes) travels next to the unfrozen device
    assert len(DEVICE_FILES) >= 5
    for name in DEVICE_FILES:
        assert (a.parent / name).read_bytes() == (MAX_DIR / name).read_bytes(), name


def test_amxd_chunks_and_patcher(built):
    data = built[0].read_bytes()
    chunks = read_chunks(data)
    assert [t for t, _ in chunks] == ["ampf", "meta", "ptch"]
    assert chunks[0][1] == b"aaaa"  # audio effect
    assert len(chunks[1][1]) == 4
    ptch = chunks[2][1]
    assert ptch.endswith(b"\x00")
    doc = json.loads(ptch[:-1].decode("utf-8"))
    source = json.loads((MAX_DIR / "M2UGen.maxpat").read_text(encoding="utf-8"))
    assert doc["patcher"]["boxes"] == source["patcher"]["boxes"]
    assert doc["patcher"]["lines"] == source["patcher"]["lines"]
    assert doc["patcher"]["openinpresentation"] == 1


def test_build_rejects_bad_sources(tmp_path):
    sys.path.insert(0, str(MAX_DIR))
    try:
        import build_amxd
    finally:
        sys.path.remove(str(MAX_DIR))
    bad = tmp_path / "bad.maxpat"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.maxpat is not valid JSON"):
        build_amxd.build(tmp_path / "out.amxd", patcher=bad)
    bad.write_text('{"patcher": {"boxes": [{"box": {"maxclass": "newobj", "text": "js missing.js"}}]}}')
    with pytest.raises(ValueError, match=r"uses \[js missing.js\] but .*missing.js does not exist"):
        build_amxd.build(tmp_path / "out.amxd", patcher=bad)
    bad.write_text('{"boxes": []}')
    with pytest.raises(ValueError, match="no patcher.boxes list"):
        build_amxd.build(tmp_path / "out.amxd", patcher=bad)
    assert not (tmp_path / "out.amxd").exists()


def test_every_object_is_a_known_max_object(built):
    known = set(json.loads((TESTS_MAX / "known_max_objects.json").read_text())["objects"])
    chunks = dict(read_chunks(built[0].read_bytes()))
    patcher = json.loads(chunks["ptch"][:-1])["patcher"]
    names = [object_name(b) for b in all_boxes(patcher)]
    unknown = sorted(set(names) - known)
    assert not unknown, f"objects not in tests/max/known_max_objects.json: {unknown}"
    # the objects the device is built from are all there
    for needed in ("js", "udpsend", "udpreceive", "live.thisdevice", "plugin~", "plugout~", "record~", "buffer~",
                   "live.tab", "textedit", "live.numbox", "live.menu", "live.text", "multislider", "live.comment",
                   "sfplay~", "dspstate~", "live.drop", "umenu"):
        assert needed in names, needed


def test_panel_fits_the_device_view():
    """Every control is in presentation mode and inside Live's device view (169 px high)."""
    patcher = json.loads((MAX_DIR / "M2UGen.maxpat").read_text(encoding="utf-8"))["patcher"]
    ui_classes = {"live.tab", "live.numbox", "live.menu", "live.text", "textedit", "multislider", "comment",
                  "live.comment"}
    shown = [b["box"] for b in patcher["boxes"] if b["box"]["maxclass"] in ui_classes]
    assert len(shown) >= 15
    for b in shown:
        assert b.get("presentation") == 1, b["id"]
        x, y, w, h = b["presentation_rect"]
        assert x >= 0 and y >= 0 and x + w <= patcher["devicewidth"] and y + h <= 169, (b["id"], b["presentation_rect"])


def test_patch_wiring_is_consistent():
    patcher = json.loads((MAX_DIR / "M2UGen.maxpat").read_text(encoding="utf-8"))["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
    assert len(boxes) == len(patcher["boxes"]), "duplicate box ids"
    for line in patcher["lines"]:
        (src, outlet), (dst, inlet) = line["patchline"]["source"], line["patchline"]["destination"]
        assert src in boxes and dst in boxes, line
        assert 0 <= outlet < boxes[src]["numoutlets"], f"{src} has no outlet {outlet}"
        assert 0 <= inlet < boxes[dst]["numinlets"], f"{dst} has no inlet {inlet}"
    js = [b for b in boxes.values() if b.get("text", "").startswith("js ")]
    assert len(js) == 1 and js[0]["text"] == "js m2ugen_device.js"
    assert js[0]["numoutlets"] == 4
    # every parameter-enabled live.* object is listed in the patcher's parameters
    params = [i for i, b in boxes.items() if b.get("parameter_enable") == 1]
    assert params and set(params) == set(k for k in patcher["parameters"] if k.startswith("obj-"))
    # every message the JS reacts to is sent into the [js] by a [prepend name] or a message box "name"
    into_js = {line["patchline"]["source"][0] for line in patcher["lines"]
               if line["patchline"]["destination"][0] == js[0]["id"]}
    senders = {boxes[i]["text"].replace("prepend ", "") for i in into_js
               if boxes[i]["maxclass"] == "message" or boxes[i].get("text", "").startswith("prepend ")}
    for handler in ("init", "mode", "prompt", "duration", "conditioning", "host", "port", "reply_port", "go",
                    "cancel", "rec", "seed", "takes", "preview", "gen_mode", "media", "media_clear", "play",
                    "accept", "regenerate", "discard", "refresh_jobs", "pick_job", "reinsert", "sample_rate",
                    "bars", "loop", "fit_tempo", "vocoder", "melody_clip", "transcribe", "dereverb",
                    "adapter", "learn", "learn_file", "learn_clear", "learn_name", "learn_cancel",
                    "stems", "stems6", "stem_op", "stem", "stem_with"):
        assert handler in senders, handler
        assert re.search(rf"^function {handler}\(", DEVICE_JS_TEXT, re.M), f"the [js] has no handler {handler}"
    receivers = [boxes[i] for i in into_js if boxes[i].get("text", "").startswith("udpreceive")]
    assert receivers, "OSC events must reach the [js]"
    # the low-priority queue (no audio dropouts); the port comes from the device (one per instance)
    assert receivers[0]["text"].split()[1:] == ["0", "@defer", "1"]


def test_patch_routes_every_ui_message_and_mixes_the_preview():
    """Every `ui(...)` / audio message the JS sends has a [route] outlet, and [sfplay~] reaches [plugout~]."""
    patcher = json.loads((MAX_DIR / "M2UGen.maxpat").read_text(encoding="utf-8"))["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
    routes = {b["text"].split()[1]: b["text"].split()[1:] for b in boxes.values()
              if b.get("text", "").startswith("route ")}
    ui_names = set(re.findall(r'\bui\("(\w+)"', DEVICE_JS_TEXT)) - {"busy"}
    assert ui_names <= set(routes["status"]), ui_names - set(routes["status"])
    audio_names = set(re.findall(r'OUT_AUDIO, \["(\w+)"', DEVICE_JS_TEXT))
    assert audio_names == set(routes["record"]), audio_names
    edges = {(l["patchline"]["source"][0], l["patchline"]["destination"][0]) for l in patcher["lines"]}
    by_text = {b.get("text", "").split(" ")[0]: i for i, b in boxes.items() if b["maxclass"] == "newobj"}
    mixers = [i for i, b in boxes.items() if b.get("text") == "+~"]
    assert len(mixers) == 2
    for m in mixers:
        assert (by_text["sfplay~"], m) in edges and (by_text["plugin~"], m) in edges and (m, by_text["plugout~"]) in edges


# ---------------------------------------------------------------------------------------------
# end to end: the device JS under node <-> real bridge <-> real server (tiny preset)


@pytest.fixture(scope="module")
def melody_model():
    """The tiny preset with MusicGen-melody's decoder: a clip melody (inputs.midi) is a mode it has."""
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny-melody"))


@pytest.fixture
def server_info(make_server, melody_model):
    return make_server(melody_model, preset="tiny-melody")


@pytest.fixture
def bridge(server, server_info):
    """`python -m bridge_osc` on a free UDP port, connected to the test server."""
    proc = subprocess.Popen([sys.executable, "-m", "bridge_osc", "--server", server, "--port", "0",
                             "--results-dir", str(server_info.data_dir / "user-results")], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ))
    port: list[int] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"listening on udp [\d.]+:(\d+)", line)
            if m and not port:
                port.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(30)
    if not port:
        proc.kill()
        pytest.fail("the bridge did not start:\n" + "".join(lines))
    yield port[0]
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_end_to_end_with_real_bridge_and_server(lom_names, bridge, server, server_info, wav_file, tmp_path):
    import soundfile as sf

    from server.client import Client

    clip = wav_file(seconds=2.0, sr=22050, channels=1, name="clip.wav")
    set_dir = tmp_path / "Live Set Project"
    set_dir.mkdir()  # a saved Set's folder exists; the bridge makes its Samples/M2UGen
    r = run_node(TESTS_MAX / "e2e_bridge.js", {
        "M2U_LOM_NAMES": str(lom_names),
        "M2U_BRIDGE_PORT": str(bridge),
        "M2U_CLIP": str(clip),
        "M2U_SET_DIR": str(set_dir),
    }, timeout=600)
    out = r.stdout + r.stderr
    passed, failed = tap_counts(out)
    assert r.returncode == 0 and failed == 0, out
    assert passed >= 9, out
    # what the device placed are real WAVs the bridge wrote from the server's bytes, next to the Set
    placed = sorted((set_dir / "Samples" / "M2UGen").glob("*.wav"))
    # generate, edit and the warped edit (the cancelled clip-melody job may have finished first: it may be there)
    for word in ("lofi", "add-drums", "add-swing"):
        assert any(word in p.name for p in placed), (word, placed)
    assert all(sf.info(p).frames > 0 for p in placed), placed
    assert sf.info(next(p for p in placed if "lofi" in p.name)).samplerate == 44100  # Live's rate, as asked
    jobs = dict(re.findall(r"M2U_JOB (\w+) (\w+)", out))
    with Client(server, timeout_s=10) as c:
        generate = c.call("status", job=jobs["generate"]).header
        edit = c.call("status", job=jobs["edit"]).header
    # the request's own options reached the job (no /m2u/set before it)
    assert generate["params"]["seed"] == 5 and generate["params"]["sample_rate"] == 44100
    assert generate["params"]["context"]["bpm"] == 120 and generate["params"]["context"]["time_signature"] == [4, 4]
    # the selected clip's region reached the edit job
    assert (edit["inputs"]["audio"]["start"], edit["inputs"]["audio"]["end"]) == (0.5, 1.5), edit["inputs"]
    with Client(server, timeout_s=10) as c:
        transcribed = c.call("status", job=jobs["transcribe"]).header
    assert transcribed["kind"] == "transcribe" and transcribed["params"]["context"]["bpm"] == 120
    with Client(server, timeout_s=10) as c:
        warped = c.call("status", job=jobs["warped"]).header
        melody = c.call("status", job=jobs["melody"]).header
        learn = c.call("status", job=jobs["learn"]).header
    # the warped clip's region went in file seconds; the results are stereo
    assert (warped["inputs"]["audio"].get("start") or 0.0, warped["inputs"]["audio"]["end"]) == (0.0, 2.0), warped["inputs"]
    assert warped["params"]["channels"] == 2
    # all 600 notes of the clip melody reached the job through the bridge's upload
    notes = melody["inputs"]["midi"]["notes"]  # the job record keeps their count
    assert (notes if isinstance(notes, int) else len(notes)) == 600, melody["inputs"]
    assert learn["kind"] == "finetune" and learn["params"]["steps"] == 20000
