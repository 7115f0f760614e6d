import { describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import {
  Attr, Class, Method, attr, attrString, attrU32, checkFingerprint, checkIntegrity, crc32, decode, decodeChannelData,
  encode, encodeChannelData, errorCode, formatIp, isChannelData, isStun, longTermKey, parseIp, readErrorCode, readXorAddress,
  saslPrep, text, xorAddress,
} from "../../src/protocol/stun.ts";
import { issueTurnCredentials, parseSecrets, parseTurnUsername, turnPassword } from "../../src/protocol/turn-rest.ts";

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const shortTerm = text("VOkJxbRl1RmTxUk/WvJxBt");

// RFC 5769 §2.1–2.4, byte for byte.
const REQUEST = hex(`000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74
  002400046e0001ff80290008932ff9b151263b3600060009657674 6a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf`);
const IPV4_RESPONSE = hex(`0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
  00200008 0001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96`);
const IPV6_RESPONSE = hex(`010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
  002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c`);
const LONG_TERM = hex(`000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b90000
  0015001c662f2f3439396b393534643 64f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700
  00080014f67024656dd64a3e02b8e0712e85c9a28ca89666`);

describe("RFC 5769 vectors", () => {
  test("2.1 sample request: attributes, short-term integrity, fingerprint", () => {
    const m = decode(REQUEST)!;
    expect(m.method).toBe(Method.Binding);
    expect(m.cls).toBe(Class.Request);
    expect(attrString(m, Attr.Software)).toBe("STUN test client");
    expect(attrString(m, Attr.Username)).toBe("evtj:h6vY");
    expect(attrU32(m, Attr.Priority)).toBe(0x6e0001ff);
    expect(checkIntegrity(m, shortTerm)).toBe(true);
    expect(checkIntegrity(m, text("wrong"))).toBe(false);
    expect(checkFingerprint(m)).toBe(true);
    // Re-encoded (zero padding where the vector pads with spaces, so other MAC bytes): the body up to
    // the username's padding is the vector's, and the new MAC and CRC check.
    const again = encode({ method: m.method, cls: m.cls, tid: m.tid, attrs: m.attrs.filter((a) => a.type !== Attr.MessageIntegrity && a.type !== Attr.Fingerprint) }, { key: shortTerm, fingerprint: true });
    expect(again.length).toBe(REQUEST.length);
    expect(again.subarray(0, 69)).toEqual(REQUEST.subarray(0, 69));
    const m2 = decode(again)!;
    expect(checkIntegrity(m2, shortTerm)).toBe(true);
    expect(checkFingerprint(m2)).toBe(true);
  });

  test("2.2 IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853", () => {
    const m = decode(IPV4_RESPONSE)!;
    expect(m.cls).toBe(Class.Success);
    expect(readXorAddress(attr(m, Attr.XorMappedAddress), m.tid)).toEqual({ family: 4, address: "192.0.2.1", port: 32853 });
    expect(xorAddress({ family: 4, address: "192.0.2.1", port: 32853 }, m.tid)).toEqual(attr(m, Attr.XorMappedAddress)!);
    expect(checkIntegrity(m, shortTerm)).toBe(true);
    expect(checkFingerprint(m)).toBe(true);
  });

  test("2.3 IPv6 response: XOR-MAPPED-ADDRESS 2001:db8:1234:5678:11:2233:4455:6677", () => {
    const m = decode(IPV6_RESPONSE)!;
    const a = readXorAddress(attr(m, Attr.XorMappedAddress), m.tid)!;
    expect(a).toEqual({ family: 6, address: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853 });
    expect(xorAddress(a, m.tid)).toEqual(attr(m, Attr.XorMappedAddress)!);
    expect(checkIntegrity(m, shortTerm)).toBe(true);
    expect(checkFingerprint(m)).toBe(true);
  });

  test("2.4 long-term authentication: key MD5(user:realm:SASLprep(pass))", () => {
    const m = decode(LONG_TERM)!;
    const user = attrString(m, Attr.Username)!;
    expect(user).toBe("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9");
    expect(attrString(m, Attr.Nonce)).toBe("f//499k954d6OL34oL9FSTvy64sA");
    expect(attrString(m, Attr.Realm)).toBe("example.org");
    expect(saslPrep("The\u00ADM\u00AAtr\u2168")).toBe("TheMatrIX");
    expect(checkIntegrity(m, longTermKey(user, "example.org", "The\u00ADM\u00AAtr\u2168"))).toBe(true);
    expect(checkIntegrity(m, longTermKey(user, "example.org", "TheMatrix"))).toBe(false);
    expect(checkFingerprint(m)).toBe(true); // none present
  });
});

describe("codec", () => {
  test("a flipped bit fails the fingerprint and the integrity", () => {
    const b = REQUEST.slice();
    b[30] = b[30]! ^ 1;
    const m = decode(b)!;
    expect(checkFingerprint(m)).toBe(false);
    expect(checkIntegrity(m, shortTerm)).toBe(false);
  });

  test("malformed input is refused, not thrown", () => {
    expect(decode(REQUEST.subarray(0, 19))).toBeNull();
    expect(decode(REQUEST.subarray(0, 60))).toBeNull(); // length field beyond the bytes
    const badLen = REQUEST.slice();
    badLen[3] = 0x57; // not a multiple of 4
    expect(decode(badLen)).toBeNull();
    const attrOver = REQUEST.slice();
    attrOver[22] = 0x7f; // SOFTWARE length beyond the message
    expect(decode(attrOver)).toBeNull();
    expect(isStun(encodeChannelData(0x4000, new Uint8Array(30)))).toBe(false);
  });

  test("encode/decode round trip with error code, addresses, long-term integrity", () => {
    const tid = new Uint8Array(12).map((_, i) => i * 7);
    const key = longTermKey("1700000000:alice/1", "switchboard", "pw");
    const b = encode({
      method: Method.Allocate, cls: Class.Error, tid,
      attrs: [
        { type: Attr.ErrorCode, value: errorCode(438, "Stale Nonce") },
        { type: Attr.XorRelayedAddress, value: xorAddress({ family: 6, address: "::1", port: 49152 }, tid) },
        { type: Attr.Nonce, value: text("abc") },
      ],
    }, { key, fingerprint: true });
    const m = decode(b)!;
    expect(m.method).toBe(Method.Allocate);
    expect(m.cls).toBe(Class.Error);
    expect(readErrorCode(m)).toEqual({ code: 438, reason: "Stale Nonce" });
    expect(readXorAddress(attr(m, Attr.XorRelayedAddress), tid)).toEqual({ family: 6, address: "::1", port: 49152 });
    expect(attrString(m, Attr.Nonce)).toBe("abc");
    expect(checkIntegrity(m, key)).toBe(true);
    expect(checkFingerprint(m)).toBe(true);
  });

  test("IPv6 text forms", () => {
    for (const s of ["::", "::1", "fe80::1:2", "2001:db8::", "1:2:3:4:5:6:7:8", "1:0:0:2:0:0:0:3"]) {
      const { family, bytes } = parseIp(s);
      expect(family).toBe(6);
      expect(parseIp(formatIp(6, bytes)).bytes).toEqual(bytes);
    }
    expect(formatIp(6, parseIp("1:0:0:2:0:0:0:3").bytes)).toBe("1:0:0:2::3");
    expect(() => parseIp("300.1.1.1")).toThrow();
  });

  test("ChannelData frames pad to 4 and carry the length", () => {
    const d = new Uint8Array([1, 2, 3, 4, 5]);
    const b = encodeChannelData(0x4001, d);
    expect(b.length).toBe(12);
    expect(isChannelData(b)).toBe(true);
    expect(decodeChannelData(b)).toEqual({ channel: 0x4001, data: d });
    expect(decodeChannelData(b.subarray(0, 8))).toBeNull();
  });

  test("crc32 is zlib's", () => {
    expect(crc32(text("123456789"))).toBe(0xcbf43926);
  });
});

describe("TURN REST credentials", () => {
  test("username expiry:device, password base64(HMAC-SHA1(secret, username))", () => {
    const c = issueTurnCredentials("s3cret", "alice/2", 1_700_000_000, 600);
    expect(c.username).toBe("1700000600:alice/2");
    expect(c.expires).toBe(1_700_000_600);
    expect(c.password).toBe(createHmac("sha1", "s3cret").update("1700000600:alice/2").digest("base64"));
    expect(turnPassword("other", c.username)).not.toBe(c.password);
    expect(parseTurnUsername(c.username)).toEqual({ expires: 1_700_000_600, device: "alice/2" });
    expect(parseTurnUsername("alice")).toBeNull();
    expect(parseTurnUsername("x:alice")).toBeNull();
    expect(() => issueTurnCredentials("", "a", 0, 1)).toThrow(/calls.secret/);
  });

  test("two secrets: first issues, both listed", () => {
    expect(parseSecrets(" new , old ,")).toEqual(["new", "old"]);
    expect(parseSecrets("")).toEqual([]);
  });
});
