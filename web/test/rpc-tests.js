// Tests of rpc.js against a real `hello-server` listening on WebSocket, run in a browser. Each
// function returns what it saw; the Rust test (examples/tests/browser_rpc.rs) drives them over
// WebDriver and checks the results, restarting the server between `beforeRestart` and
// `afterRestart`.
import { Client, FrameReader, RpcError, Status, backoffDelay, encodeFrame, Kind } from "../rpc.js";

const GREETER = ["hello.Greeter", "1"];

function check(condition, what) {
  if (!condition) throw new Error(`failed: ${what}`);
}

async function expectError(promise, what) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof RpcError, `${what}: an RpcError, not ${e}`);
    return e;
  }
  throw new Error(`failed: ${what} should have failed`);
}

/** Frames split anywhere and joined in any way are read back whole. */
function framing() {
  const a = encodeFrame(Kind.PING, 0, 0, 7);
  const b = encodeFrame(Kind.STREAM_ITEM, 3, 0, 2n ** 63n, new TextEncoder().encode("[1,2]"));
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  for (let cut = 0; cut <= both.length; cut++) {
    const reader = new FrameReader();
    const frames = [...reader.push(both.slice(0, cut)), ...reader.push(both.slice(cut))];
    check(frames.length === 2, `two frames when cut at ${cut}`);
    check(frames[0].kind === Kind.PING && frames[0].id === 7n, "the ping");
    check(frames[1].id === 2n ** 63n && frames[1].body.length === 5, "the item");
  }
  let refused = null;
  try {
    new FrameReader(16).push(encodeFrame(Kind.RESPONSE, 3, 0, 1, new Uint8Array(17)));
  } catch (e) {
    refused = e.message;
  }
  check(refused && refused.includes("over the limit"), `an oversized frame is refused: ${refused}`);
  const delays = [0, 1, 2, 10].map((n) => backoffDelay(n, 250, 5000, () => 1));
  check(JSON.stringify(delays) === "[250,500,1000,5000]", `backoff ${delays}`);
  return "ok";
}

/** Calls, errors, streams, deadlines and cancel against the server at `url`. */
export async function run(url) {
  const results = { framing: framing() };
  const states = [];
  const client = new Client(url, { onState: (s) => states.push(s) });
  try {
    results.hello = await client.call(...GREETER, "hello", ["browser"]);
    results.add = await client.call(...GREETER, "add", [2, 40]);
    // Many calls at once, answered in any order, each to its own caller.
    const sums = await Promise.all(Array.from({ length: 200 }, (_, i) => client.call(...GREETER, "add", [i, i])));
    check(sums.every((s, i) => s === 2 * i), "200 calls at once");
    results.concurrent = sums.length;

    const overflow = await expectError(client.call(...GREETER, "add", [2 ** 62, 2 ** 62]), "overflow");
    check(overflow.status === Status.APPLICATION_ERROR && overflow.detail === "Overflow", `overflow ${overflow.detail}`);
    const missing = await expectError(client.call(...GREETER, "hullo", []), "unknown method");
    check(missing.status === Status.METHOD_NOT_FOUND, `unknown method: ${missing.statusName}`);
    const service = await expectError(client.call("nobody.Here", "1", "x", []), "unknown service");
    check(service.status === Status.SERVICE_NOT_FOUND, `unknown service: ${service.statusName}`);
    const bad = await expectError(client.call(...GREETER, "add", ["two", 2]), "bad arguments");
    check(bad.status === Status.BAD_REQUEST, `bad arguments: ${bad.statusName}`);

    // A stream longer than the first credit: the client must grant more as it reads.
    let count = 0;
    let last = null;
    for await (const n of client.stream(...GREETER, "countdown", [3000])) {
      check(last === null || n === last - 1, `in order: ${n} after ${last}`);
      last = n;
      count += 1;
    }
    check(count === 3000 && last === 1, `3000 items, got ${count}`);
    results.streamed = count;

    // A stream that would run for ever, stopped by its deadline.
    let before = 0;
    const endless = client.stream(...GREETER, "countdown", [4_000_000_000], { deadlineMs: 300 });
    const late = await expectError(
      (async () => {
        for await (const _ of endless) before += 1;
      })(),
      "a deadline",
    );
    check(late.kind === "deadline" || late.status === Status.DEADLINE_EXCEEDED, `deadline: ${late.kind} ${late.statusName}`);
    check(before > 0, "items came before the deadline");
    results.deadline = late.kind === "deadline" ? "client" : "server";

    // Cancelled by the reader after 10 items, and by an AbortSignal: the connection carries on.
    const stream = client.stream(...GREETER, "countdown", [4_000_000_000]);
    let taken = 0;
    for await (const _ of stream) {
      taken += 1;
      if (taken === 10) break;
    }
    const abort = new AbortController();
    const aborted = client.call(...GREETER, "hello", ["never"], { signal: abort.signal });
    abort.abort();
    const cancelled = await expectError(aborted, "an aborted call");
    check(cancelled.kind === "cancelled" || cancelled.kind === "connection", `aborted: ${cancelled.kind}`);
    results.afterCancel = await client.call(...GREETER, "add", [1, 1]);
    results.states = states;
    return results;
  } finally {
    client.close();
  }
}

let survivor = null;
let survivorStates = [];

/** Opens a client that lives across a server restart. */
export async function beforeRestart(url) {
  survivorStates = [];
  survivor = new Client(url, {
    heartbeatMs: 500,
    reconnect: { initialMs: 100, maxMs: 500 },
    onState: (s) => survivorStates.push(s),
  });
  return await survivor.call(...GREETER, "add", [20, 1]);
}

/** After the server was stopped and started again: the same client answers again. */
export async function afterRestart() {
  const started = performance.now();
  let result = null;
  let lastError = null;
  while (performance.now() - started < 10_000) {
    try {
      result = await survivor.call(...GREETER, "add", [40, 2], { deadlineMs: 2000 });
      break;
    } catch (e) {
      lastError = `${e.kind}: ${e.message}`;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const states = survivorStates;
  survivor.close();
  return { result, lastError, states };
}
