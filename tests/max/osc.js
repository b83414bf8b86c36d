// Minimal OSC 1.0 codec for the tests: what Max's [udpsend] / [udpreceive] do with messages.
//
// encode(): like [udpsend], a Max message "address atom atom ..." becomes one OSC message; JS numbers
// that are whole become int32 ("i"), others float32 ("f"), strings "s" (Max's [js] outputs whole
// numbers as ints, so the bridge sees the same type tags as from Live).
// decode(): like [udpreceive], an OSC message (or every message of a bundle) becomes
// {address, args}; accepted tags i f d h s S T F N.
"use strict";

function padded(buf) {
    const size = Math.ceil((buf.length + 1) / 4) * 4;
    const out = Buffer.alloc(size);
    buf.copy(out);
    return out;
}

function oscString(s) {
    return padded(Buffer.from(String(s), "utf8"));
}

function encode(address, args) {
    if (typeof address !== "string" || address.charAt(0) !== "/") throw new Error(`OSC address must start with '/': ${address}`);
    let tags = ",";
    const parts = [];
    for (const a of args) {
        if (typeof a === "number") {
            if (!Number.isFinite(a)) throw new Error(`OSC argument is not finite: ${a}`);
            const b = Buffer.alloc(4);
            if (Number.isInteger(a)) {
                tags += "i";
                b.writeInt32BE(a);
            } else {
                tags += "f";
                b.writeFloatBE(a);
            }
            parts.push(b);
        } else if (typeof a === "string") {
            tags += "s";
            parts.push(oscString(a));
        } else {
            throw new Error(`OSC argument of unsupported type: ${typeof a}`);
        }
    }
    return Buffer.concat([oscString(address), oscString(tags), ...parts]);
}

function readString(buf, offset) {
    const end = buf.indexOf(0, offset);
    if (end < 0) throw new Error("OSC string is not terminated");
    const s = buf.toString("utf8", offset, end);
    return [s, Math.ceil((end + 1) / 4) * 4];
}

function decodeMessage(buf) {
    let [address, off] = readString(buf, 0);
    let tags = ",";
    if (off < buf.length) [tags, off] = readString(buf, off);
    if (tags.charAt(0) !== ",") throw new Error(`OSC type tags must start with ',': ${tags}`);
    const args = [];
    for (const t of tags.slice(1)) {
        if (t === "i") { args.push(buf.readInt32BE(off)); off += 4; }
        else if (t === "f") { args.push(buf.readFloatBE(off)); off += 4; }
        else if (t === "d") { args.push(buf.readDoubleBE(off)); off += 8; }
        else if (t === "h") { args.push(Number(buf.readBigInt64BE(off))); off += 8; }
        else if (t === "s" || t === "S") { let s; [s, off] = readString(buf, off); args.push(s); }
        else if (t === "T") args.push(1);
        else if (t === "F") args.push(0);
        else if (t === "N") args.push(null);
        else throw new Error(`OSC type tag '${t}' is not supported`);
    }
    return { address, args };
}

function decode(buf) {
    if (buf.length >= 8 && buf.toString("ascii", 0, 8) === "#bundle\0") {
        const out = [];
        let off = 16; // "#bundle\0" + 8-byte time tag
        while (off < buf.length) {
            const size = buf.readInt32BE(off);
            out.push(...decode(buf.subarray(off + 4, off + 4 + size)));
            off += 4 + size;
        }
        return out;
    }
    return [decodeMessage(buf)];
}

module.exports = { encode, decode };
