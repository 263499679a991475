// The framework's wire protocol (docs/PROTOCOL.md) for browsers, over WebSocket: frames,
// request ids, the JSON serializer, deadlines, cancel, server streams with credit, heartbeats,
// draining (GoAway) and reconnecting with backoff. An ES module with no dependencies and no
// build step.
//
//   import { Client } from "./rpc.js";
//   const client = new Client("ws://127.0.0.1:7001/");
//   const sum = await client.call("hello.Greeter", "1", "add", [2, 40]);
//   for await (const n of client.stream("hello.Greeter", "1", "countdown", [3])) { … }
//
// Values travel as JSON (serializer 3): a method's arguments are one array, a result or item
// is the JSON the server wrote. JSON numbers beyond 2^53 lose precision in JavaScript; no
// service of the example programs sends such a number.

/** Frame kinds (§3). */
export const Kind = Object.freeze({
  REQUEST: 1,
  RESPONSE: 2,
  ONE_WAY: 3,
  PING: 4,
  PONG: 5,
  CANCEL: 6,
  STREAM_ITEM: 7,
  STREAM_END: 8,
  GO_AWAY: 9,
  STREAM_CREDIT: 10,
});

/** Status codes (§6). */
export const Status = Object.freeze({
  OK: 0,
  BAD_REQUEST: 1,
  SERVICE_NOT_FOUND: 2,
  METHOD_NOT_FOUND: 3,
  DEADLINE_EXCEEDED: 4,
  CANCELLED: 5,
  SERVER_BUSY: 6,
  APPLICATION_ERROR: 7,
  INTERNAL_ERROR: 8,
  UNSUPPORTED_SERIALIZER: 9,
  UNAVAILABLE: 10,
  REJECTED: 11,
  PROTOCOL_ERROR: 12,
});

const STATUS_NAMES = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

const MAGIC = 0xdab0;
const VERSION = 1;
const HEADER_LEN = 18;
const JSON_SERIALIZER = 3;
/** The largest frame body accepted from the server (the protocol's default maximum). */
export const MAX_BODY = 8 * 1024 * 1024;
/** A stream's first credit (§8), and how much the client grants each time it has used that much. */
const INITIAL_CREDIT = 256;
const CREDIT_BATCH = 128;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Why a call failed. `kind` is one of:
 * - "status": the server answered an error status (`status`, `statusName`; `detail` is the
 *   application's typed error, parsed from JSON, for APPLICATION_ERROR);
 * - "deadline": the call's deadline passed before an answer came;
 * - "cancelled": the caller cancelled it (its AbortSignal fired);
 * - "connection": the connection was lost (or the client closed) before an answer came;
 * - "protocol": the server broke the protocol, or sent what could not be decoded.
 */
export class RpcError extends Error {
  constructor(kind, message, { status = null, detail = null } = {}) {
    super(message);
    this.name = "RpcError";
    this.kind = kind;
    this.status = status;
    this.statusName = status === null ? null : (STATUS_NAMES[status] ?? `status ${status}`);
    this.detail = detail;
  }

  /** Whether the call never ran and may be sent again (§6: busy, unavailable). */
  get retryable() {
    return this.status === Status.SERVER_BUSY || this.status === Status.UNAVAILABLE;
  }
}

/** Encodes one frame. */
export function encodeFrame(kind, serializer, status, id, body = new Uint8Array(0)) {
  const frame = new Uint8Array(HEADER_LEN + body.length);
  const view = new DataView(frame.buffer);
  view.setUint16(0, MAGIC);
  view.setUint8(2, VERSION);
  view.setUint8(3, kind);
  view.setUint8(4, serializer);
  view.setUint8(5, status);
  view.setBigUint64(6, BigInt(id));
  view.setUint32(14, body.length);
  frame.set(body, HEADER_LEN);
  return frame;
}

/** The body of a Request (§4): the preamble, then the arguments as a JSON array. */
export function encodeRequestBody(service, version, method, args, deadlineMs, metadata) {
  const parts = [];
  const short = (text, what, min) => {
    const bytes = encoder.encode(text);
    if (bytes.length < min || bytes.length > 255) {
      throw new RangeError(`${what} must have ${min} to 255 bytes: ${JSON.stringify(text)}`);
    }
    parts.push(Uint8Array.of(bytes.length), bytes);
  };
  short(service, "the service name", 1);
  short(version, "the version", 0);
  short(method, "the method name", 1);
  const deadline = new Uint8Array(4);
  new DataView(deadline.buffer).setUint32(0, Math.min(Math.ceil(deadlineMs ?? 0), 0xffffffff));
  parts.push(deadline);
  const entries = Object.entries(metadata ?? {});
  if (entries.length > 255) throw new RangeError("at most 255 metadata entries");
  parts.push(Uint8Array.of(entries.length));
  for (const [key, value] of entries) {
    short(key, "a metadata key", 1);
    const bytes = encoder.encode(String(value));
    if (bytes.length > 0xffff) throw new RangeError(`metadata ${key} is longer than 65535 bytes`);
    parts.push(Uint8Array.of(bytes.length >> 8, bytes.length & 0xff), bytes);
  }
  parts.push(encoder.encode(JSON.stringify(args === undefined ? null : args)));
  const length = parts.reduce((n, p) => n + p.length, 0);
  const body = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    body.set(part, at);
    at += part.length;
  }
  return body;
}

/** Splits a byte stream into frames; throws on a frame the protocol forbids. */
export class FrameReader {
  constructor(maxBody = MAX_BODY) {
    this.maxBody = maxBody;
    this.buffer = new Uint8Array(0);
  }

  /** Adds bytes; returns the frames they complete. */
  push(bytes) {
    if (this.buffer.length === 0) {
      this.buffer = bytes;
    } else {
      const joined = new Uint8Array(this.buffer.length + bytes.length);
      joined.set(this.buffer);
      joined.set(bytes, this.buffer.length);
      this.buffer = joined;
    }
    const frames = [];
    while (this.buffer.length >= HEADER_LEN) {
      const view = new DataView(this.buffer.buffer, this.buffer.byteOffset, HEADER_LEN);
      if (view.getUint16(0) !== MAGIC) throw new Error("not a frame of this protocol (bad magic)");
      if (view.getUint8(2) !== VERSION) throw new Error(`unknown protocol version ${view.getUint8(2)}`);
      const kind = view.getUint8(3);
      if (kind < Kind.REQUEST || kind > Kind.STREAM_CREDIT) throw new Error(`unknown frame kind ${kind}`);
      const length = view.getUint32(14);
      if (length > this.maxBody) throw new Error(`a frame of ${length} bytes is over the limit of ${this.maxBody}`);
      if (this.buffer.length < HEADER_LEN + length) break;
      frames.push({
        kind,
        serializer: view.getUint8(4),
        status: view.getUint8(5),
        id: view.getBigUint64(6),
        body: this.buffer.subarray(HEADER_LEN, HEADER_LEN + length),
      });
      this.buffer = this.buffer.subarray(HEADER_LEN + length);
    }
    return frames;
  }
}

/** Reads an error body (§5): a message for people and the typed detail, if any. */
function decodeError(status, body) {
  if (body.length < 2) return new RpcError("status", STATUS_NAMES[status] ?? `status ${status}`, { status });
  const length = (body[0] << 8) | body[1];
  let message;
  let detail = null;
  try {
    message = decoder.decode(body.subarray(2, 2 + length));
    const rest = body.subarray(2 + length);
    if (rest.length > 0) detail = JSON.parse(decoder.decode(rest));
  } catch (e) {
    return new RpcError("protocol", `an unreadable error body: ${e.message}`, { status });
  }
  return new RpcError("status", message, { status, detail });
}

function decodeJson(body) {
  return JSON.parse(decoder.decode(body));
}

/** The delay before reconnect attempt `attempt` (from 0): doubling, capped, with jitter. */
export function backoffDelay(attempt, initialMs, maxMs, random = Math.random) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

/** One server stream: an async iterator of items, ended by the server or by `cancel()`. */
class Stream {
  constructor(client, call) {
    this.client = client;
    this.call = call;
    this.items = [];
    this.waiting = null;
    this.done = false;
    this.error = null;
    this.consumed = 0;
    this.granted = INITIAL_CREDIT;
    this.received = 0;
  }

  push(item) {
    this.received += 1;
    if (this.received > this.granted) {
      this.call.connection.fail(new Error("the server sent stream items beyond the credit granted"));
      return;
    }
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = null;
      this.consumed += 1;
      this.grant();
      waiting.resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  end(error) {
    if (this.done) return;
    this.done = true;
    this.error = error;
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = null;
      if (error) waiting.reject(error);
      else waiting.resolve({ value: undefined, done: true });
    }
  }

  grant() {
    if (this.consumed >= CREDIT_BATCH && !this.done) {
      const body = new Uint8Array(4);
      new DataView(body.buffer).setUint32(0, this.consumed);
      this.granted += this.consumed;
      this.consumed = 0;
      this.call.connection.send(encodeFrame(Kind.STREAM_CREDIT, 0, 0, this.call.id, body));
    }
  }

  next() {
    if (this.items.length > 0) {
      this.consumed += 1;
      this.grant();
      return Promise.resolve({ value: this.items.shift(), done: false });
    }
    if (this.done) {
      return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** Stops the stream: the server is told (Cancel), the iterator ends. */
  cancel() {
    if (this.done) return;
    this.client.cancelCall(this.call);
    this.end(null);
  }

  return() {
    this.cancel();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/** One WebSocket and the calls open on it. */
class Connection {
  constructor(client, socket) {
    this.client = client;
    this.socket = socket;
    this.reader = new FrameReader(client.options.maxBody);
    this.calls = new Map();
    this.draining = false;
    this.closed = false;
    this.lastRead = performance.now();
    this.lastPing = 0;
  }

  send(frame) {
    if (!this.closed && this.socket.readyState === WebSocket.OPEN) this.socket.send(frame);
  }

  receive(data) {
    this.lastRead = performance.now();
    let frames;
    try {
      frames = this.reader.push(new Uint8Array(data));
    } catch (e) {
      this.fail(e);
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      this.handle(frame);
    }
  }

  handle(frame) {
    switch (frame.kind) {
      case Kind.PING:
        this.send(encodeFrame(Kind.PONG, 0, 0, frame.id));
        return;
      case Kind.PONG:
        return;
      case Kind.GO_AWAY:
        this.draining = true;
        this.client.drained(this, frame.body.length ? decoder.decode(frame.body) : "");
        return;
      case Kind.RESPONSE:
      case Kind.STREAM_ITEM:
      case Kind.STREAM_END:
        break;
      default:
        this.fail(new Error(`the server sent a frame of kind ${frame.kind}, which only clients send`));
        return;
    }
    const call = this.calls.get(frame.id);
    if (!call) return; // cancelled or timed out: an answer in flight is ignored (§8)
    if (frame.kind === Kind.STREAM_ITEM) {
      if (!call.stream) return this.fail(new Error("a stream item for a unary call"));
      let item;
      try {
        item = decodeJson(frame.body);
      } catch (e) {
        return this.finish(call, new RpcError("protocol", `an unreadable stream item: ${e.message}`));
      }
      call.stream.push(item);
      return;
    }
    if (frame.status !== Status.OK) {
      const error = decodeError(frame.status, frame.body);
      if (error.status === Status.UNAVAILABLE && call.retries < 3) {
        // The server is draining and did not run it: send it again on a new connection (§10).
        this.forget(call);
        call.retries += 1;
        this.client.resend(call);
        return;
      }
      return this.finish(call, error);
    }
    if (frame.kind === Kind.STREAM_END || (frame.kind === Kind.RESPONSE && !call.stream)) {
      if (call.stream) return this.finish(call, null);
      let value;
      try {
        value = frame.body.length ? decodeJson(frame.body) : null;
      } catch (e) {
        return this.finish(call, new RpcError("protocol", `an unreadable result: ${e.message}`));
      }
      return this.finish(call, null, value);
    }
    this.fail(new Error("a Response with status OK for a stream"));
  }

  forget(call) {
    this.calls.delete(call.id);
    call.cleanup();
    this.client.maybeRetire(this);
  }

  finish(call, error, value) {
    this.forget(call);
    if (call.stream) call.stream.end(error);
    else if (error) call.reject(error);
    else call.resolve(value);
  }

  /** Ends every call with `error` and closes the socket. */
  fail(reason) {
    if (this.closed) return;
    this.closed = true;
    const error =
      reason instanceof RpcError ? reason : new RpcError("connection", `connection lost: ${reason.message ?? reason}`);
    for (const call of [...this.calls.values()]) this.finish(call, error);
    try {
      this.socket.close();
    } catch {
      // already closing
    }
    this.client.lost(this, error);
  }
}

/**
 * A client of one server over WebSocket. It connects at once, and again with backoff whenever
 * the connection is lost; calls made while it is (re)connecting wait for the connection, up to
 * their deadline.
 *
 * Options: `heartbeatMs` (10 000: a Ping after that long without reading anything),
 * `idleTimeoutMs` (3 × heartbeat: the connection is dead after that long without reading
 * anything), `reconnect` (`{ initialMs: 250, maxMs: 5000 }`, or `false` to stay closed),
 * `connectTimeoutMs` (5 000), `maxBody` (8 MiB), `protocols` (the WebSocket subprotocols to
 * offer), `onState(state, detail)` (called with "connecting", "open", "reconnecting" with
 * `{ attempt, delayMs, reason }`, "closed").
 */
export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      heartbeatMs: 10_000,
      connectTimeoutMs: 5_000,
      maxBody: MAX_BODY,
      protocols: undefined,
      onState: () => {},
      ...options,
    };
    this.options.idleTimeoutMs ??= 3 * this.options.heartbeatMs;
    this.options.reconnect =
      options.reconnect === false ? false : { initialMs: 250, maxMs: 5_000, ...(options.reconnect ?? {}) };
    this.nextId = 1n;
    this.connection = null;
    this.retiring = new Set();
    this.waiters = [];
    this.state = "connecting";
    this.attempt = 0;
    this.stopped = false;
    this.timer = setInterval(() => this.tick(), Math.max(50, Math.min(1000, this.options.heartbeatMs / 4)));
    this.open();
  }

  setState(state, detail) {
    this.state = state;
    try {
      this.options.onState(state, detail);
    } catch (e) {
      console.error("onState failed", e);
    }
  }

  open() {
    if (this.stopped) return;
    let socket;
    try {
      socket = new WebSocket(this.url, this.options.protocols);
    } catch (e) {
      this.retry(`cannot connect: ${e.message}`);
      return;
    }
    socket.binaryType = "arraybuffer";
    const connection = new Connection(this, socket);
    this.connecting = connection;
    const timeout = setTimeout(() => {
      if (socket.readyState === WebSocket.CONNECTING) socket.close();
    }, this.options.connectTimeoutMs);
    socket.onopen = () => {
      clearTimeout(timeout);
      if (this.stopped) {
        socket.close();
        return;
      }
      this.connecting = null;
      connection.lastRead = performance.now();
      if (this.connection) this.retire(this.connection);
      this.connection = connection;
      this.attempt = 0;
      this.setState("open");
      const waiters = this.waiters;
      this.waiters = [];
      for (const waiter of waiters) waiter.resolve(connection);
    };
    socket.onmessage = (event) => connection.receive(event.data);
    socket.onerror = () => {};
    socket.onclose = (event) => {
      clearTimeout(timeout);
      if (this.connecting === connection) {
        this.connecting = null;
        this.retry(`cannot connect to ${this.url}${event.reason ? `: ${event.reason}` : ""}`);
        return;
      }
      connection.fail(new Error(event.reason || `closed (code ${event.code})`));
    };
  }

  /** A connection was lost: its calls have failed; connect again unless another is current. */
  lost(connection, error) {
    this.retiring.delete(connection);
    if (this.connection !== connection) return;
    this.connection = null;
    this.retry(error.message);
  }

  retry(reason) {
    if (this.stopped) return;
    if (!this.options.reconnect) {
      this.close(reason);
      return;
    }
    const { initialMs, maxMs } = this.options.reconnect;
    const delayMs = backoffDelay(this.attempt, initialMs, maxMs);
    this.attempt += 1;
    this.setState("reconnecting", { attempt: this.attempt, delayMs, reason });
    this.reconnectTimer = setTimeout(() => this.open(), delayMs);
  }

  /** The server sent GoAway: new calls go to a new connection, this one closes when idle. */
  drained(connection) {
    if (this.connection === connection) {
      this.connection = null;
      this.retire(connection);
      this.open();
    }
  }

  retire(connection) {
    connection.draining = true;
    this.retiring.add(connection);
    this.maybeRetire(connection);
  }

  maybeRetire(connection) {
    if (connection.draining && connection.calls.size === 0 && this.retiring.has(connection)) {
      this.retiring.delete(connection);
      connection.closed = true;
      connection.socket.close();
    }
  }

  tick() {
    const now = performance.now();
    for (const connection of [this.connection, ...this.retiring]) {
      if (!connection || connection.closed) continue;
      const silent = now - connection.lastRead;
      if (silent >= this.options.idleTimeoutMs) {
        connection.fail(new Error(`no answer for ${Math.round(silent)} ms`));
      } else if (silent >= this.options.heartbeatMs && now - connection.lastPing >= this.options.heartbeatMs) {
        connection.lastPing = now;
        connection.send(encodeFrame(Kind.PING, 0, 0, 0));
      }
    }
  }

  /** Resolves with an open connection, waiting (up to `deadline`) while the client connects. */
  ready(deadline, signal) {
    if (this.stopped) return Promise.reject(new RpcError("connection", "the client is closed"));
    if (this.connection && !this.connection.closed) return Promise.resolve(this.connection);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.waiters.push(waiter);
      const cancel = (error) => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(error);
      };
      if (deadline !== null) {
        const left = deadline - performance.now();
        setTimeout(() => cancel(new RpcError("deadline", "the deadline passed while connecting")), Math.max(0, left));
      }
      signal?.addEventListener("abort", () => cancel(new RpcError("cancelled", "cancelled")), { once: true });
    });
  }

  start(service, version, method, args, options, stream) {
    const deadline = options.deadlineMs ? performance.now() + options.deadlineMs : null;
    const call = {
      service,
      version,
      method,
      args,
      metadata: options.metadata,
      deadline,
      signal: options.signal,
      retries: 0,
      stream: null,
      connection: null,
      id: 0n,
      timers: [],
      cleanup() {
        for (const t of this.timers) clearTimeout(t);
        this.timers = [];
      },
    };
    const promise = new Promise((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
    });
    if (stream) call.stream = new Stream(this, call);
    this.resend(call);
    return { call, promise };
  }

  /** Sends `call` on the current connection (waiting for one). */
  resend(call) {
    const fail = (error) => {
      if (call.stream) call.stream.end(error);
      else call.reject(error);
    };
    if (call.signal?.aborted) return fail(new RpcError("cancelled", "cancelled"));
    this.ready(call.deadline, call.signal).then((connection) => {
      if (call.signal?.aborted) return fail(new RpcError("cancelled", "cancelled"));
      const left = call.deadline === null ? 0 : call.deadline - performance.now();
      if (call.deadline !== null && left <= 0) return fail(new RpcError("deadline", "the deadline passed"));
      let body;
      try {
        body = encodeRequestBody(call.service, call.version, call.method, call.args, left, call.metadata);
      } catch (e) {
        return fail(e);
      }
      call.id = this.nextId;
      this.nextId += 1n;
      call.connection = connection;
      connection.calls.set(call.id, call);
      if (call.deadline !== null) {
        call.timers.push(
          setTimeout(() => {
            this.cancelCall(call);
            connection.finish(call, new RpcError("deadline", `${call.service}/${call.method}: the deadline passed`));
          }, left),
        );
      }
      if (call.signal) {
        call.signal.addEventListener(
          "abort",
          () => {
            if (connection.calls.get(call.id) !== call) return;
            this.cancelCall(call);
            connection.finish(call, new RpcError("cancelled", "cancelled"));
          },
          { once: true },
        );
      }
      connection.send(encodeFrame(Kind.REQUEST, JSON_SERIALIZER, 0, call.id, body));
    }, fail);
  }

  cancelCall(call) {
    if (call.connection && call.connection.calls.get(call.id) === call) {
      call.connection.send(encodeFrame(Kind.CANCEL, 0, 0, call.id));
      call.connection.forget(call);
    }
  }

  /**
   * Calls a unary method; resolves with its result, rejects with an `RpcError`. Options:
   * `deadlineMs` (the call's time budget, told to the server), `metadata` (an object of
   * strings), `signal` (an AbortSignal that cancels it).
   */
  call(service, version, method, args = [], options = {}) {
    return this.start(service, version, method, args, options, false).promise;
  }

  /**
   * Calls a server-streaming method; returns an async iterator of its items (ended by the
   * server's StreamEnd, or by `cancel()`; an error end throws an `RpcError` from the loop).
   */
  stream(service, version, method, args = [], options = {}) {
    return this.start(service, version, method, args, options, true).call.stream;
  }

  /** Closes the client: calls in flight fail, no reconnection. */
  close(reason = "closed by the client") {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.reconnectTimer);
    const error = new RpcError("connection", reason);
    for (const waiter of this.waiters) waiter.reject(error);
    this.waiters = [];
    for (const connection of [this.connection, this.connecting, ...this.retiring]) {
      if (connection) connection.fail(error);
    }
    this.connection = null;
    this.setState("closed", { reason });
  }
}
