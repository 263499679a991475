// The chat service (`chat.Signal`, docs/PROTOCOL.md §12.3) for browsers, over rpc.js: a
// session that registers (or logs in), keeps itself alive with heartbeats, follows its inbox
// and who is online, acknowledges what it has shown, and comes back by itself, registering
// again, when the connection or the session is lost.
//
//   import { ChatSession } from "./chat.js";
//   const chat = new ChatSession("ws://127.0.0.1:7301/", { name: "ann", password: "…" });
//   chat.addEventListener("message", (e) => show(e.detail));
//   await chat.start();
//   await chat.send(bobId, "hi");
//
// Events (each a CustomEvent; what it carries is in `detail`): "state" ({ state, reason }: one
// of "connecting", "online", "reconnecting", "closed"), "message" (an Envelope), "presence"
// (a PresenceEvent), "room" (a RoomEvent), "friend" (a FriendEvent), "call" (a CallEvent).
// A message whose `file` is set carries a file the server holds: `takeFile` downloads it;
// `sendFile` sends one through the server.

import { Client, RpcError } from "./rpc.js";

const SIGNAL = ["chat.Signal", "2"];

/** How many bytes of a file go in one call: bytes travel as JSON arrays of numbers (up to four
 * characters a byte), so pieces stay well under the server's 4 MiB frame limit. */
const FILE_PIECE = 256 * 1024;

/** The SHA-256 of `bytes` as 64 hexadecimal digits, or null where the browser has no
 * `crypto.subtle` (a page not served over HTTPS nor from localhost). */
export async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** A random (version 4) UUID, also where `crypto.randomUUID` is missing (plain http). */
export function uuid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The name of a chat error's variant: `"NoSession"` for `"NoSession"`, `"UnknownUser"` for `{"UnknownUser": …}`. */
export function chatErrorKind(error) {
  const detail = error?.detail;
  if (typeof detail === "string") return detail;
  if (detail && typeof detail === "object") return Object.keys(detail)[0] ?? null;
  return null;
}

/** A chat error as a sentence: the server's message. */
export function describe(error) {
  if (error instanceof RpcError) return error.message;
  return String(error?.message ?? error);
}

export class ChatSession extends EventTarget {
  /**
   * `account`: `{ name, password }` and either `id` (register: the first registration of an id
   * makes the account) or `login: true` (sign in by name). Options: `rpc` (options for the
   * rpc.js Client), `heartbeatMs` (overrides the server's advice, for tests).
   */
  constructor(url, account, options = {}) {
    super();
    this.account = { ...account };
    this.options = options;
    this.session = null;
    this.state = "connecting";
    this.stopped = false;
    this.generation = 0;
    this.acks = new Set();
    this.seen = new Set();
    this.client = new Client(url, {
      ...(options.rpc ?? {}),
      onState: (state, detail) => {
        if (state === "reconnecting" && this.session) {
          this.setState("reconnecting", detail?.reason ?? "connection lost");
        }
      },
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, reason = null) {
    if (this.state === state && state !== "reconnecting") return;
    this.state = state;
    this.emit("state", { state, reason });
  }

  /** This user as the server recorded them (`{ id, name, advertised, observed }`). */
  get me() {
    return this.session?.user ?? null;
  }

  /** Signs in, then follows the inbox and presence; resolves once online. */
  async start() {
    await this.signIn();
    return this.session.user;
  }

  async signIn() {
    const generation = ++this.generation;
    const request = this.account.login
      ? ["login", [{ name: this.account.name, password: this.account.password, endpoint: null }]]
      : [
          "register",
          [{ id: this.account.id, name: this.account.name, secret: this.account.password, endpoint: null }],
        ];
    const session = await this.client.call(...SIGNAL, request[0], request[1], { deadlineMs: 15_000 });
    if (this.stopped || generation !== this.generation) return;
    this.session = session;
    this.account.id = session.user.id;
    this.setState("online");
    this.follow(generation);
  }

  /** Heartbeats, the inbox and presence streams of one session, until it is lost. */
  follow(generation) {
    const token = this.session.token;
    const every = this.options.heartbeatMs ?? this.session.heartbeat_ms;
    const beat = async () => {
      while (!this.stopped && generation === this.generation) {
        await new Promise((r) => setTimeout(r, every));
        if (this.stopped || generation !== this.generation) return;
        try {
          await this.client.call(...SIGNAL, "heartbeat", [token], { deadlineMs: every });
        } catch (e) {
          return this.lost(generation, e);
        }
      }
    };
    const inbox = async () => {
      try {
        for await (const item of this.client.stream(...SIGNAL, "inbox", [token])) {
          if (generation !== this.generation) return;
          this.inboxItem(token, item);
        }
        this.lost(generation, new Error("the server ended the inbox"));
      } catch (e) {
        this.lost(generation, e);
      }
    };
    const presence = async () => {
      try {
        for await (const event of this.client.stream(...SIGNAL, "presence", [token])) {
          if (generation !== this.generation) return;
          this.emit("presence", event);
        }
      } catch (e) {
        this.lost(generation, e);
      }
    };
    beat();
    inbox();
    presence();
  }

  inboxItem(token, item) {
    const [kind, value] = Object.entries(item)[0];
    switch (kind) {
      case "Message":
        // Shown once, acknowledged after: a message that comes again (not acknowledged in
        // time) is not shown twice.
        if (!this.seen.has(value.id)) {
          this.seen.add(value.id);
          this.emit("message", value);
        }
        // A message that carries a file the server holds is acknowledged once the file is
        // saved (`takeFile`): acknowledging it deletes the server's copy.
        if (value.file) return;
        this.acks.add(value.id);
        queueMicrotask(() => this.flushAcks(token));
        return;
      case "Room":
        return this.emit("room", value);
      case "Friend":
        return this.emit("friend", value);
      case "Call":
        return this.emit("call", value);
      case "Punch":
        // Hole punching is between terminal clients' QUIC sockets; a browser has none.
        return;
      default:
        console.warn("an inbox item of an unknown kind", item);
    }
  }

  async flushAcks(token) {
    if (this.acks.size === 0) return;
    const ids = [...this.acks];
    this.acks.clear();
    try {
      await this.client.call(...SIGNAL, "ack", [token, ids], { deadlineMs: 10_000 });
    } catch {
      // Not acknowledged: they come again with the next inbox, and are not shown twice.
    }
  }

  /** The session is lost (connection, expiry, replaced): sign in again, with backoff. */
  async lost(generation, error) {
    if (this.stopped || generation !== this.generation) return;
    this.generation += 1;
    if (/session replaced/.test(error?.message ?? "")) {
      // This user signed in elsewhere: taking the session back would only bounce between them.
      this.stop("signed in on another device");
      return;
    }
    this.setState("reconnecting", describe(error));
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.signIn();
        return;
      } catch (e) {
        const kind = chatErrorKind(e);
        if (kind === "WrongSecret" || kind === "WrongLogin" || kind === "NameTaken") {
          this.stop(describe(e));
          return;
        }
        this.setState("reconnecting", describe(e));
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
      }
    }
  }

  /** Ends the session (leave) and the connection. */
  async stop(reason = "signed out") {
    if (this.stopped) return;
    const token = this.session?.token;
    this.stopped = true;
    this.generation += 1;
    if (token && reason === "signed out") {
      try {
        await this.client.call(...SIGNAL, "leave", [token], { deadlineMs: 1000 });
      } catch {
        // gone already
      }
    }
    this.client.close(reason);
    this.setState("closed", reason);
  }

  /** Calls a `chat.Signal` method with the session's token first; a lost session is renewed once. */
  async invoke(method, args = [], deadlineMs = 10_000) {
    if (!this.session) throw new Error("not signed in");
    const token = this.session.token;
    try {
      return await this.client.call(...SIGNAL, method, [token, ...args], { deadlineMs });
    } catch (e) {
      if (chatErrorKind(e) === "NoSession" && !this.stopped) {
        await this.lost(this.generation, e);
        return await this.client.call(...SIGNAL, method, [this.session.token, ...args], { deadlineMs });
      }
      throw e;
    }
  }

  /**
   * Downloads the file that `envelope` carries (held by the server for this user), checks its
   * SHA-256, acknowledges the message (which deletes the server's copy) and answers a Blob.
   * `progress(received, size)` is called after each piece.
   */
  async takeFile(envelope, progress = () => {}) {
    const { file, id } = envelope;
    const parts = [];
    let received = 0;
    while (received < file.size) {
      const piece = await this.invoke("download", [id, received, FILE_PIECE], 60_000);
      if (piece.length === 0) throw new Error(`the server's copy ends at ${received} of ${file.size} bytes`);
      parts.push(Uint8Array.from(piece));
      received += piece.length;
      progress(received, file.size);
    }
    const blob = new Blob(parts);
    const hash = await sha256Hex(await blob.arrayBuffer());
    if (hash !== null && hash !== file.sha256) {
      throw new Error(`${file.name} did not arrive whole (its SHA-256 differs); try again`);
    }
    await this.invoke("ack", [[id]]);
    return blob;
  }

  /**
   * Sends a File (or Blob with a `name`) to a user through the server, which holds it for them
   * until their client takes it: answers "Delivered" (they are online) or "Stored".
   * `progress(sent, size)` is called after each piece.
   */
  async sendFile(to, file, progress = () => {}) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const sha256 = await sha256Hex(bytes);
    if (sha256 === null) throw new Error("this page cannot hash files: open it over HTTPS or from localhost");
    const id = uuid();
    let sent = await this.invoke("upload_file", [id, to, { name: file.name, size: bytes.length, sha256 }]);
    while (sent < bytes.length) {
      const piece = bytes.subarray(sent, Math.min(sent + FILE_PIECE, bytes.length));
      await this.invoke("upload_chunk", [id, sent, Array.from(piece)], 60_000);
      sent += piece.length;
      progress(sent, bytes.length);
    }
    return { id, delivery: await this.invoke("finish_upload", [id, Date.now()], 60_000) };
  }

  send(to, text) {
    return this.invoke("relay", [uuid(), to, text, Date.now()]);
  }
  post(room, text) {
    return this.invoke("post", [room, uuid(), text, Date.now()]);
  }
  lookup(user) {
    return this.invoke("lookup", [user]);
  }
  online(after = null) {
    return this.invoke("online", [after, 0]);
  }
  createRoom(room, inviteOnly) {
    return this.invoke("create_room", [room, inviteOnly ? "InviteOnly" : "Open"]);
  }
  join(room) {
    return this.invoke("join", [room]);
  }
  leaveRoom(room) {
    return this.invoke("leave_room", [room]);
  }
  invite(room, user) {
    return this.invoke("invite", [room, user]);
  }
  addMember(room, user) {
    return this.invoke("add_member", [room, user]);
  }
  myRooms(after = null) {
    return this.invoke("my_rooms", [after, 0]);
  }
  rooms(after = null) {
    return this.invoke("rooms", [after, 0]);
  }
  members(room, after = null) {
    return this.invoke("members", [room, after, 0]);
  }
  history(room, after = null) {
    return this.invoke("history", [room, after, 0]);
  }
  call(user, media) {
    return this.invoke("call", [user, media]);
  }
  ringing(call) {
    return this.invoke("ringing", [call]);
  }
  acceptCall(call) {
    return this.invoke("accept_call", [call]);
  }
  rejectCall(call, busy = false) {
    return this.invoke("reject_call", [call, busy]);
  }
  hangUp(call) {
    return this.invoke("hang_up", [call]);
  }
  sendSdp(call, kind, sdp) {
    return this.invoke("send_sdp", [call, kind, sdp]);
  }
  sendIce(call, candidate) {
    return this.invoke("send_ice", [
      call,
      {
        candidate: candidate.candidate ?? "",
        sdp_mid: candidate.sdpMid ?? null,
        sdp_m_line_index: candidate.sdpMLineIndex ?? null,
        username_fragment: candidate.usernameFragment ?? null,
      },
    ]);
  }
}
