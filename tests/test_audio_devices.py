"""Audio devices through PortAudio's JACK host API against real peers: a JACK server (dummy driver)
and ``jack_thru`` (a client whose inputs come straight back on its outputs), so what one process
plays on the "jack_thru" device another process records from it. PortAudio lists devices when it
starts, so each check runs in a fresh process started after the peers."""

from __future__ import annotations

import json
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
from jack_peer import RATE, jack  # noqa: F401  (fixture)


def py(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


RECORD = ("import sys, numpy as np; from m2ugen.audio_devices import record; "
          "w, sr = record(float(sys.argv[1]), sys.argv[2]); np.save(sys.argv[3], w); print(sr)")
PLAY = ("import sys, numpy as np; from m2ugen.audio_devices import play; sr = int(sys.argv[2]); "
        "t = np.arange(int(0.6 * sr)) / sr; play(0.5 * np.sin(2 * np.pi * 1000 * t), sr, sys.argv[1])")
PLAY_UNTIL = PLAY.replace("play(", "import os\nwhile not os.path.exists(sys.argv[3]): play(", 1)


def test_devices_lists_the_jack_ports(jack):
    jack.client("jack_thru", port="jack_thru:input_1")
    out = subprocess.run([sys.executable, "-m", "server", "devices"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    devices = {d["name"]: d for d in lines if d["op"] == "device"}
    assert devices["system"]["hostapi"] == "JACK Audio Connection Kit"
    assert devices["system"]["inputs"] == 2 and devices["system"]["outputs"] == 2
    assert devices["system"]["default_samplerate"] == RATE
    assert devices["jack_thru"]["inputs"] == 2 and lines[-1] == {"op": "exit", "code": 0}


def test_record_and_play_through_jack(jack, tmp_path):
    jack.client("jack_thru", port="jack_thru:input_1")
    # silence from the dummy capture ports: the right length and rate
    got = py(RECORD, "0.5", "system", str(tmp_path / "silence.npy"))
    assert got.returncode == 0, got.stderr
    silence = np.load(tmp_path / "silence.npy")
    assert int(got.stdout) == RATE and silence.shape == (2, RATE // 2) and silence.dtype == np.float32

    # one process records 2 s from jack_thru while another plays a 1 kHz tone (given at 44.1 kHz: resampled)
    # again and again until the recording is saved: however late the recorder starts, it hears the tone
    rec = subprocess.Popen([sys.executable, "-c", RECORD, "2.0", "jack_thru", str(tmp_path / "loop.npy")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    played = py(PLAY_UNTIL, "jack_thru", "44100", str(tmp_path / "loop.npy"))
    assert played.returncode == 0, played.stderr
    out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    loop = np.load(tmp_path / "loop.npy")
    assert loop.shape == (2, 2 * RATE)
    assert 0.3 < np.abs(loop[0]).max() < 0.7  # the tone came back (not silence, not clipped)
    spectrum = np.abs(np.fft.rfft(loop[0]))
    assert abs(np.argmax(spectrum) * RATE / loop.shape[1] - 1000) < 5


def test_ask_records_from_an_input(jack, server, tmp_path):
    jack.client("jack_thru", port="jack_thru:input_1")
    out = subprocess.run([sys.executable, "-m", "server", "ask", "--record", "1.0", "--input", "system",
                          "--prompt", "what is this?", "--max-new-tokens", "2", "--server", server, "--no-progress"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    done = [json.loads(x) for x in out.stdout.splitlines() if json.loads(x)["op"] == "done"][0]
    audio = done["inputs"]["audio"]
    # recorded at the device rate, then kept by the server in its intake format (at most 32 kHz, stereo)
    assert audio["sample_rate"] == min(RATE, 32000) and audio["channels"] == 2 and abs(audio["seconds"] - 1.0) < 1e-3, audio
    # uploaded under the temporary WAV's name (protocol 2: the server never sees the path), then removed here
    assert audio["name"].startswith("m2ugen-record-") and not (Path(tempfile.gettempdir()) / audio["name"]).exists()


def test_missing_portaudio_is_named(tmp_path):
    # a sounddevice that fails the way it does without libportaudio2
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    out = subprocess.run([sys.executable, "-m", "server", "devices"], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 4 and "libportaudio2" in out.stderr and "PortAudio library not found" in out.stderr


LISTEN = """
import signal, sys, time, numpy as np, sounddevice as sd
chunks = []
def stop(*_):
    raise SystemExit
signal.signal(signal.SIGTERM, stop)
with sd.InputStream(device=sys.argv[1], channels=2, samplerate=48000, callback=lambda x, *_: chunks.append(x.copy())):
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.05)
    except SystemExit:
        pass
np.save(sys.argv[2], np.concatenate(chunks))
"""


def test_generate_plays_the_result(jack, server, tmp_path):
    jack.client("jack_thru", port="jack_thru:input_1")
    listener = subprocess.Popen([sys.executable, "-c", LISTEN, "jack_thru", str(tmp_path / "heard.npy")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
    out = subprocess.run([sys.executable, "-m", "server", "generate", "--prompt", "a test", "--duration", "1",
                          "--max-new-tokens", "2", "--server", server, "--no-progress", "--play", "jack_thru",
                          "--out", str(tmp_path / "take.wav")], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "--play" not in out.stderr, out.stderr
    time.sleep(0.5)
    listener.terminate()
    assert listener.wait(timeout=30) == 0, listener.stderr.read()
    import soundfile as sf

    take, sr = sf.read(tmp_path / "take.wav", always_2d=True)
    heard = np.load(tmp_path / "heard.npy")
    peak = np.abs(take).max()
    assert peak > 0 and 0.5 * peak < np.abs(heard).max() < 1.5 * peak  # the result came out of jack_thru
