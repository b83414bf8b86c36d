// Runs max_device/m2ugen_device.js the way Max's [js] does: in its own global scope (node's vm), with
// the Max globals LiveAPI (the LOM stub), Task, outlet, post, messnamed, max, patcher and messagename.
// Outlet 0/1 can be connected to real UDP sockets, doing what [udpsend]/[udpreceive] do in the patch.
"use strict";

const fs = require("fs");
const path = require("path");
const vm = require("vm");
const dgram = require("dgram");
const osc = require("./osc");
const { World, makeLiveAPI } = require("./lom_stub");

const MAX_DIR = path.join(__dirname, "..", "..", "max_device");
const DEVICE_JS = path.join(MAX_DIR, "m2ugen_device.js");

// Every file of the device: m2ugen_device.js and what it include()s (in order).
function deviceFiles() {
    const main = fs.readFileSync(DEVICE_JS, "utf8");
    const names = [];
    const re = /^include\("([^"]+)"\);/gm;
    let m;
    while ((m = re.exec(main)) !== null) names.push(path.join(MAX_DIR, m[1]));
    return [DEVICE_JS].concat(names);
}

// Max's Task: new Task(fn, thisobj); schedule(ms); cancel(). Runs from node's timers.
function makeTask(pending) {
    function Task(fn, thisobj) {
        this.fn = fn;
        this.thisobj = thisobj;
        this.timer = null;
    }
    Task.prototype.schedule = function (ms) {
        this.cancel();
        const self = this;
        this.ms = ms || 0;
        pending.add(this);
        this.timer = setTimeout(function () {
            pending.delete(self);
            self.timer = null;
            self.fn.call(self.thisobj);
        }, ms || 0);
        // a device left running by a failed test (e.g. its hello retries) must not keep node alive
        if (this.timer.unref) this.timer.unref();
    };
    Task.prototype.cancel = function () {
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
        pending.delete(this);
    };
    return Task;
}

// macOS caps UDP datagrams at 9,216 bytes by default (sysctl net.inet.udp.maxdgram;
// ExistentialAudio/SwiftOSC#16, shared/docs/daw-bridges.md §4.3): sendto() fails with EMSGSIZE ("Message
// too long", AbletonOSC#88) and [udpsend] only posts an error -- the message is lost. The harness does the
// same with every OSC message the device sends, UDP connected or not.
const MAX_DATAGRAM = 9216;

class Device {
    constructor(world, options) {
        const o = options || {};
        this.world = world;
        this.outlets = [[], [], [], []];   // every message per outlet, as atom arrays
        this.posts = [];
        this.dropped = [];                 // OSC messages over MAX_DATAGRAM: {address, bytes}, never delivered
        this.messnamed = [];
        this.pendingTasks = new Set();
        this.thisDevice = o.thisDevice || world.device; // a second device: world.addDevice(track)
        this.sandbox = {
            LiveAPI: this._gatedLiveAPI(makeLiveAPI(world, this.thisDevice)),
            Task: makeTask(this.pendingTasks),
            // Max's Global: every [js] that names it sees the same object
            Global: function Global(name) { return world.globals[name] || (world.globals[name] = {}); },
            outlet: (index, ...atoms) => this._outlet(index, atoms),
            post: (...a) => this.posts.push(a.join(" ")),
            messnamed: (...a) => this.messnamed.push(a),
            max: { os: o.os || "macintosh" },
            patcher: { filepath: o.patcherPath === undefined ? "Macintosh HD:/Users/me/Music/M2UGen/M2UGen.amxd" : o.patcherPath },
            messagename: "",
            // Max's JS include(file): the file's code runs in the including script's global scope
            // (docs.cycling74.com/max8/vignettes/jsrequire); Max finds it in the search path, which
            // starts with the device's own folder.
            include: (name) => {
                const file = path.join(MAX_DIR, String(name));
                if (!fs.existsSync(file)) throw new Error(`include: ${name} is not next to the device`);
                vm.runInContext(fs.readFileSync(file, "utf8"), this.sandbox, { filename: file });
            },
            JSON, Math, Date, Number, String, Array, Error, RegExp, parseInt, encodeURI,
        };
        vm.createContext(this.sandbox);
        vm.runInContext(fs.readFileSync(DEVICE_JS, "utf8"), this.sandbox, { filename: DEVICE_JS });
        this.udp = null;
    }

    // Before live.thisdevice has banged, Max refuses LiveAPI: it prints "Live API is not initialized, use
    // live.thisdevice to determine when initialization is complete" and the object points nowhere
    // (docs.cycling74.com, live.thisdevice / JS Live API). The patch sends "init" on that bang.
    _gatedLiveAPI(LiveAPI) {
        const dev = this;
        function Gated(a, b) {
            if (!dev.liveReady) {
                dev.world.maxConsole.push("Live API is not initialized, use live.thisdevice to determine when initialization is complete");
                return new LiveAPI("");
            }
            return new LiveAPI(a, b);
        }
        return Gated;
    }

    // What Max printed about LiveAPI misuse (before live.thisdevice, properties this Live lacks).
    get liveErrors() {
        return this.world.maxConsole;
    }

    // a message into the [js] inlet, e.g. send("mode", 2), send("prompt", "dark", "ambient")
    send(name, ...args) {
        if (name === "init") this.liveReady = true;   // [live.thisdevice] banged
        const fn = this.sandbox[name];
        if (typeof fn !== "function") throw new Error(`the device JS has no handler '${name}'`);
        this.sandbox.messagename = name;
        return fn.apply(this.sandbox, args);
    }

    // an OSC event as [udpreceive] hands it to [js]: selector = OSC address
    receive(address, args) {
        this.sandbox.messagename = address;
        this.sandbox.anything.apply(this.sandbox, args);
    }

    _outlet(index, atoms) {
        if (index === 0 && String(atoms[0]).charAt(0) === "/") {
            const bytes = osc.encode(String(atoms[0]), atoms.slice(1)).length;
            if (bytes > MAX_DATAGRAM) {
                this.dropped.push({ address: String(atoms[0]), bytes });
                this.posts.push(`udpsend: sendto: Message too long (${bytes} bytes)`);
                return;
            }
        }
        this.outlets[index].push(atoms);
        if (this.udp) this.udp.route(index, atoms);
    }

    // Scheduled Tasks that follow jobs (watchdogs, polls), not the hello retries before the bridge answers.
    jobTasks() {
        return Array.from(this.pendingTasks).filter((t) => t.what !== "hello");
    }

    // Run every scheduled Task now (what Max's scheduler does when their time comes), e.g. a timeout.
    fireTasks(filter) {
        for (const t of Array.from(this.pendingTasks)) {
            if (filter && !filter(t)) continue;
            t.cancel();
            t.fn.call(t.thisobj);
        }
    }

    ui(name) {
        return this.outlets[2].filter((m) => m[0] === name).map((m) => m.slice(1));
    }

    lastStatus() {
        const s = this.ui("status");
        return s.length ? String(s[s.length - 1][0]) : "";
    }

    osc() {
        return this.outlets[0].filter((m) => String(m[0]).charAt(0) === "/");
    }

    // the last /m2u/submit as {kind, options: {name: value(s)}}
    lastSubmit() {
        const msg = this.osc().filter((m) => m[0] === "/m2u/submit").pop();
        if (!msg) return null;
        return parseSubmit(msg.slice(1));
    }

    // Connect outlet 0 to a UDP sender and outlet 1 to a UDP receiver (what [udpsend]/[udpreceive] do).
    async connectUdp() {
        this.udp = new UdpPeer(this);
        await this.udp.open();
        return this.udp;
    }

    async close() {
        for (const t of Array.from(this.pendingTasks)) t.cancel();
        const udp = this.udp;
        this.udp = null;   // closing twice is harmless
        if (udp) await udp.close();
    }
}

const SUBMIT_ARITY = { time_signature: 2 };
function parseSubmit(args) {
    const out = { kind: args[0], options: {} };
    for (let i = 1; i < args.length;) {
        const name = args[i];
        const n = SUBMIT_ARITY[name] || 1;
        const value = n === 1 ? args[i + 1] : args.slice(i + 1, i + 1 + n);
        if (name === "clip" && name in out.options) out.options.clip = [].concat(out.options.clip, value); // repeats
        else out.options[name] = value;
        i += 1 + n;
    }
    return out;
}

class UdpPeer {
    constructor(device) {
        this.device = device;
        this.sendSocket = dgram.createSocket("udp4");
        this.recvSocket = null;
        this.host = "127.0.0.1";
        this.port = 0;
        this.received = [];
        this.errors = [];
        this.waiters = [];
    }

    open() {
        return new Promise((resolve) => this.sendSocket.bind(0, "127.0.0.1", resolve));
    }

    route(index, atoms) {
        if (index === 0) {
            if (atoms[0] === "host") this.host = String(atoms[1]);
            else if (atoms[0] === "port") this.port = Number(atoms[1]);
            else {
                const buf = osc.encode(String(atoms[0]), atoms.slice(1));
                this.sendSocket.send(buf, this.port, this.host);
            }
        } else if (index === 1 && atoms[0] === "port") {
            this.listen(Number(atoms[1]));
        }
    }

    listen(port) {
        if (this.recvSocket && this.recvPort === port) return;
        if (this.recvSocket) this.recvSocket.close();
        this.recvPort = port;
        const sock = dgram.createSocket("udp4");
        sock.on("message", (buf) => {
            let messages;
            try {
                messages = osc.decode(buf);
            } catch (e) {
                this.errors.push(e);
                return;
            }
            for (const m of messages) {
                this.received.push(m);
                this.device.receive(m.address, m.args);
                this._wake();
            }
        });
        sock.on("error", (e) => this.errors.push(e));
        sock.bind(port, "127.0.0.1");
        this.recvSocket = sock;
    }

    _wake() {
        for (const w of this.waiters.slice()) {
            if (w.test()) {
                this.waiters.splice(this.waiters.indexOf(w), 1);
                w.resolve();
            }
        }
    }

    // resolves when test() becomes true (checked after every received message and every 50 ms)
    waitFor(test, timeoutMs, what) {
        return new Promise((resolve, reject) => {
            if (test()) return resolve();
            const w = { test, resolve: () => { clearInterval(poll); clearTimeout(timer); resolve(); } };
            const poll = setInterval(() => this._wake(), 50);
            const timer = setTimeout(() => {
                clearInterval(poll);
                this.waiters.splice(this.waiters.indexOf(w), 1);
                const seen = this.received.map((m) => m.address + " " + JSON.stringify(m.args)).join("\n  ");
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received:\n  ${seen}`));
            }, timeoutMs);
            this.waiters.push(w);
        });
    }

    close() {
        return new Promise((resolve) => {
            this.sendSocket.close(() => {
                if (this.recvSocket) this.recvSocket.close(resolve);
                else resolve();
            });
        });
    }
}

// A loaded device in a new World; preview off (results placed at once) unless a test turns it on.
function ready(options, deviceOptions) {
    const world = new World(options);
    const dev = new Device(world, deviceOptions);
    dev.send("preview", 0);
    dev.send("init");
    return { world, dev };
}

// The LOM calls of one function name, in order.
function calls(world, name) {
    return world.log.filter((e) => e.op === "call" && e.name === name);
}

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

// Until the device has run every Task it deferred to "now" (placement, a reply's next step), chains
// included; timed Tasks (polls, watchdogs, hello retries) stay pending. Waits on that state, not on a
// guess of how long a loaded machine takes.
async function settle(dev) {
    for (let i = 0; i < 1000; i++) {
        if (!Array.from(dev.pendingTasks).some((t) => !t.ms)) return;
        await new Promise((r) => setTimeout(r, 0));
    }
    throw new Error("settle: the device kept deferring work");
}

// A UDP port nothing listens on now (bound, read, released).
async function freePort() {
    const s = dgram.createSocket("udp4");
    await new Promise((r) => s.bind(0, "127.0.0.1", r));
    const p = s.address().port;
    await new Promise((r) => s.close(r));
    return p;
}

// A real WAV (16-bit stereo silence) of `seconds` at `dir/name`: the LOM stub reads its length as Live does.
function writeWav(dir, name, seconds, sampleRate) {
    const sr = sampleRate || 8000;
    const data = Buffer.alloc(Math.round(seconds * sr) * 4);
    const h = Buffer.alloc(44);
    h.write("RIFF", 0); h.writeUInt32LE(36 + data.length, 4); h.write("WAVE", 8);
    h.write("fmt ", 12); h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(2, 22);
    h.writeUInt32LE(sr, 24); h.writeUInt32LE(sr * 4, 28); h.writeUInt16LE(4, 32); h.writeUInt16LE(16, 34);
    h.write("data", 36); h.writeUInt32LE(data.length, 40);
    const p = path.join(dir, name);
    fs.writeFileSync(p, Buffer.concat([h, data]));
    return p;
}

// An environment variable an end-to-end script needs (its Python test sets it).
function requiredEnv(name, runner) {
    const v = process.env[name];
    if (!v) throw new Error(`${name} is not set: run this through ${runner}`);
    return v;
}

// A device on UDP talking to the bridge on `bridgePort`, in a Live whose Set is saved in `setDir`;
// resolves once the bridge has welcomed it. `devices` collects it for closing.
async function startUdpDevice(devices, bridgePort, setDir, worldOptions, previewOn) {
    const world = new World(Object.assign({ setPath: path.join(setDir, "Song.als") }, worldOptions));
    const dev = new Device(world);
    devices.push(dev);
    const udp = await dev.connectUdp();
    dev.send("port", bridgePort);
    dev.send("reply_port", await freePort());
    dev.send("preview", previewOn ? 1 : 0);
    dev.send("init");
    await udp.waitFor(() => udp.received.some((m) => m.address === "/m2u/welcome"), 10000, "/m2u/welcome");
    return { world, dev, udp };
}

module.exports = { ready, calls, sleep, settle, freePort, writeWav, requiredEnv, startUdpDevice, Device, DEVICE_JS, MAX_DIR,
    MAX_DATAGRAM, deviceFiles, parseSubmit };
