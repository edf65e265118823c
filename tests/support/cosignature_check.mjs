// An independent reading of c2sp.org/tlog-cosignature (Ed25519, type 0x04), in Node's own crypto:
// argv: <witness vkey> <signed checkpoint file>. Prints the cosignature's time when a signature line
// of that key verifies over "cosignature/v1\ntime <t>\n" + checkpoint text; exits 1 otherwise.
import { createHash, createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";

const [vkey, notePath] = process.argv.slice(2);
const [name, keyIdHex, keyB64] = [vkey.split("+")[0], vkey.split("+")[1], vkey.split("+").slice(2).join("+")];
const key = Buffer.from(keyB64, "base64");
if (key.length !== 33 || key[0] !== 0x04) throw new Error("not an Ed25519 cosignature/v1 vkey");
const keyId = createHash("sha256").update(Buffer.concat([Buffer.from(name + "\n"), key])).digest().subarray(0, 4);
if (keyId.toString("hex") !== keyIdHex) throw new Error("key id mismatch");
const publicKey = createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), key.subarray(1)]),
  format: "der", type: "spki" });

const note = readFileSync(notePath, "utf8");
const split = note.lastIndexOf("\n\n");
const text = note.slice(0, split + 1);
for (const line of note.slice(split + 2).split("\n").filter(Boolean)) {
  const [dash, lineName, b64] = line.split(" ");
  const raw = Buffer.from(b64, "base64");
  if (dash !== "\u2014" || lineName !== name || !raw.subarray(0, 4).equals(keyId)) continue;
  const time = raw.readBigUInt64BE(4);
  const message = Buffer.from(`cosignature/v1\ntime ${time}\n${text}`);
  if (raw.length === 76 && verify(null, message, publicKey, raw.subarray(12))) {
    console.log(time.toString());
    process.exit(0);
  }
}
console.error("no valid cosignature by " + vkey);
process.exit(1);
