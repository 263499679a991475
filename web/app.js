// The web chat: sign in, who is online, direct messages, groups with their history, and calls
// between two browsers over WebRTC (audio, video and a data channel), signaled through the
// chat server. Served by `chat-server --web ADDR`, which also tells it (config.json) where the
// server's WebSocket endpoint is and which ICE servers to use.
//
// `window.chatApp` exposes the state for tests and for the curious.

import { ChatSession, chatErrorKind, describe, uuid } from "./chat.js";

const $ = (id) => document.getElementById(id);

const app = {
  chat: null,
  config: null,
  me: null,
  people: new Map(), // id → UserInfo, online now
  groups: new Map(), // name → RoomInfo
  conversations: new Map(), // key → { title, kind, target, messages: [], unread }
  current: null,
  call: null, // the call in progress (see startCall / incoming)
  calls: [], // every call's outcome, for tests: { id, state, connectedMs, ended }
  dataMessages: [],
  log: [],
  files: new Map(), // message id → { progress } while downloading, { url, blob } once saved
};
window.chatApp = app;

function toast(text) {
  $("toast").textContent = text;
  app.log.push(text);
}

async function loadConfig() {
  const params = new URLSearchParams(location.search);
  let config = {};
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    // not served by chat-server: use the query
  }
  if (params.get("ws")) config.ws = params.get("ws");
  if (!config.ws) config.ws = `ws://${location.hostname || "127.0.0.1"}:7301/`;
  config.ice_servers ??= [];
  return config;
}

// ---- sign in ----

async function signIn(register) {
  const name = $("name").value.trim();
  const password = $("password").value;
  $("signin-error").textContent = "";
  const saved = JSON.parse(localStorage.getItem(`chat-account:${name.toLowerCase()}`) ?? "null");
  const account = register
    ? { id: saved?.id ?? uuid(), name, password }
    : { name, password, login: true };
  const chat = new ChatSession(app.config.ws, account);
  wire(chat);
  try {
    app.me = await chat.start();
  } catch (e) {
    chat.stop("sign-in failed");
    const kind = chatErrorKind(e);
    $("signin-error").textContent =
      kind === "WrongLogin"
        ? "Wrong name or password."
        : kind === "NameTaken"
          ? "That name is taken."
          : kind === "WrongSecret"
            ? "This device's account has another password."
            : describe(e);
    return;
  }
  localStorage.setItem(`chat-account:${name.toLowerCase()}`, JSON.stringify({ id: app.me.id }));
  app.chat = chat;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = app.me.name;
  await refreshGroups();
}

function wire(chat) {
  chat.addEventListener("state", (e) => {
    const { state, reason } = e.detail;
    const badge = $("status");
    badge.className = `badge ${state}`;
    badge.textContent =
      state === "online" ? "online" : state === "reconnecting" ? "reconnecting…" : state === "closed" ? "offline" : "connecting…";
    badge.title = reason ?? "";
    if (state === "reconnecting") toast(`Connection lost (${reason}); reconnecting…`);
    if (state === "online" && app.me) {
      toast("Back online.");
      refreshGroups();
    }
    if (state === "closed" && reason && reason !== "signed out" && reason !== "sign-in failed") {
      toast(`Signed out: ${reason}`);
    }
  });
  chat.addEventListener("presence", (e) => presence(e.detail));
  chat.addEventListener("message", (e) => message(e.detail));
  chat.addEventListener("room", (e) => roomEvent(e.detail));
  chat.addEventListener("friend", (e) => {
    const [kind, value] = Object.entries(e.detail)[0];
    const who = value.from ?? value.by;
    toast(`${who.name}: friend ${kind.toLowerCase()}`);
  });
  chat.addEventListener("call", (e) => callEvent(e.detail));
}

// ---- people and presence ----

let listComplete = true;
function presence(event) {
  const [kind, value] = Object.entries(event)[0];
  if (kind === "Online") {
    if (listComplete) app.people.clear();
    for (const user of value.users) app.people.set(user.id, user);
    listComplete = !value.more;
  } else if (kind === "Joined") {
    app.people.set(value.id, value);
  } else if (kind === "Left") {
    app.people.delete(value.id);
  }
  renderPeople();
}

function renderPeople() {
  const list = $("people");
  list.replaceChildren();
  const people = [...app.people.values()].filter((u) => u.id !== app.me?.id).sort((a, b) => a.name.localeCompare(b.name));
  for (const user of people) {
    const key = `user:${user.id}`;
    const item = document.createElement("li");
    item.dataset.user = user.name;
    item.textContent = user.name;
    const unread = app.conversations.get(key)?.unread;
    if (unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = unread;
      item.append(badge);
    }
    if (app.current === key) item.classList.add("active");
    item.onclick = () => open(key, user.name, "user", user.id);
    list.append(item);
  }
  if (people.length === 0) {
    const item = document.createElement("li");
    item.className = "muted";
    item.textContent = "nobody else yet";
    list.append(item);
  }
}

// ---- groups ----

async function refreshGroups() {
  try {
    const page = await app.chat.myRooms();
    app.groups = new Map(page.items.map((r) => [r.name, r]));
  } catch (e) {
    toast(describe(e));
  }
  renderGroups();
}

function renderGroups() {
  const list = $("groups");
  list.replaceChildren();
  for (const room of [...app.groups.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const key = `room:${room.name}`;
    const item = document.createElement("li");
    item.dataset.room = room.name;
    item.textContent = `#${room.name}`;
    if (room.membership === "Invited") item.textContent += " (invited)";
    const unread = app.conversations.get(key)?.unread;
    if (unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = unread;
      item.append(badge);
    }
    if (app.current === key) item.classList.add("active");
    item.onclick = () => openGroup(room.name);
    list.append(item);
  }
}

async function openGroup(name) {
  const room = app.groups.get(name);
  try {
    if (!room || room.membership === "Invited" || room.membership === "Outsider") {
      app.groups.set(name, await app.chat.join(name));
      renderGroups();
    }
    const key = `room:${name}`;
    const conversation = conversation_(key, `#${name}`, "room", name);
    const history = await app.chat.history(name);
    const known = new Set(conversation.messages.map((m) => m.id));
    const older = history.items.filter((m) => !known.has(m.id));
    conversation.messages = [...older, ...conversation.messages].sort((a, b) => a.sent_at_ms - b.sent_at_ms);
    open(key, `#${name}`, "room", name);
  } catch (e) {
    toast(describe(e));
  }
}

function roomEvent(event) {
  const [kind, value] = Object.entries(event)[0];
  const who = value.user?.name ?? value.by?.name;
  note(`room:${value.room}`, `${who} ${kind === "Invited" ? "invited you" : kind.toLowerCase()}`);
  refreshGroups();
}

// ---- conversations ----

function conversation_(key, title, kind, target) {
  let conversation = app.conversations.get(key);
  if (!conversation) {
    conversation = { title, kind, target, messages: [], unread: 0 };
    app.conversations.set(key, conversation);
  }
  return conversation;
}

function message(envelope) {
  const [kind, target] = Object.entries(envelope.to)[0];
  let key;
  let title;
  if (kind === "Room") {
    key = `room:${target}`;
    title = `#${target}`;
  } else {
    const other = envelope.from.id === app.me.id ? target : envelope.from.id;
    key = `user:${other}`;
    title = app.people.get(other)?.name ?? envelope.from.name;
  }
  const conversation = conversation_(key, title, kind === "Room" ? "room" : "user", kind === "Room" ? target : envelope.from.id);
  if (conversation.messages.some((m) => m.id === envelope.id)) return;
  conversation.messages.push(envelope);
  if (app.current === key) renderMessages();
  else {
    conversation.unread += 1;
    renderPeople();
    renderGroups();
  }
}

function note(key, text) {
  const conversation = app.conversations.get(key);
  if (!conversation) return;
  conversation.messages.push({ id: uuid(), note: text, sent_at_ms: Date.now() });
  if (app.current === key) renderMessages();
}

function open(key, title, kind, target) {
  const conversation = conversation_(key, title, kind, target);
  conversation.unread = 0;
  app.current = key;
  $("title").textContent = title;
  $("call-buttons").hidden = kind !== "user";
  $("invite-form").hidden = kind !== "room";
  $("text").disabled = false;
  $("send").disabled = false;
  $("attach").hidden = kind !== "user";
  $("text").focus();
  renderMessages();
  renderPeople();
  renderGroups();
}

function renderMessages() {
  const conversation = app.conversations.get(app.current);
  const list = $("messages");
  list.replaceChildren();
  for (const m of conversation?.messages ?? []) {
    const item = document.createElement("li");
    if (m.note) {
      item.className = "note";
      item.textContent = m.note;
    } else {
      if (m.from.id === app.me.id) item.classList.add("mine");
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = `${m.from.name} · ${new Date(m.sent_at_ms).toLocaleTimeString()}`;
      item.append(from, document.createTextNode(m.text));
      if (m.file && m.from.id !== app.me.id) item.append(fileControl(m));
    }
    list.append(item);
  }
  list.scrollTop = list.scrollHeight;
}

// ---- files held by the server ----

function sizeText(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** What a message that carries a file shows: a button that downloads it, then a link that saves it. */
function fileControl(m) {
  const box = document.createElement("div");
  box.className = "file";
  const state = app.files.get(m.id);
  if (state?.url) {
    const link = document.createElement("a");
    link.href = state.url;
    link.download = m.file.name;
    link.className = "saved-file";
    link.textContent = `Save ${m.file.name} (${sizeText(m.file.size)})`;
    box.append(link);
  } else {
    const button = document.createElement("button");
    button.className = "small secondary take-file";
    button.textContent = state?.progress ?? `Download ${m.file.name} (${sizeText(m.file.size)})`;
    button.disabled = Boolean(state?.progress);
    button.onclick = () => takeFile(m);
    box.append(button);
  }
  return box;
}

async function takeFile(m) {
  app.files.set(m.id, { progress: "Downloading…" });
  renderMessages();
  try {
    const blob = await app.chat.takeFile(m, (received, size) => {
      app.files.set(m.id, { progress: `Downloading… ${Math.floor((100 * received) / size)} %` });
      renderMessages();
    });
    const url = URL.createObjectURL(blob);
    app.files.set(m.id, { url, blob });
    renderMessages();
    // Offer it to the user's downloads at once; the link stays to save it again.
    const link = document.createElement("a");
    link.href = url;
    link.download = m.file.name;
    link.click();
  } catch (e) {
    app.files.delete(m.id);
    renderMessages();
    toast(describe(e));
  }
}

async function sendFile() {
  const input = $("file");
  const file = input.files?.[0];
  input.value = "";
  const conversation = app.conversations.get(app.current);
  if (!file || conversation?.kind !== "user") return;
  const key = app.current;
  try {
    const { id, delivery } = await app.chat.sendFile(conversation.target, file, (sent, size) => {
      toast(`Sending ${file.name}: ${Math.floor((100 * sent) / size)} %`);
    });
    message({
      id,
      from: { id: app.me.id, name: app.me.name },
      to: { User: conversation.target },
      text: `sent a file: ${file.name}`,
      sent_at_ms: Date.now(),
      path: delivery === "Stored" ? "Stored" : "Relayed",
      file: { name: file.name, size: file.size, sha256: "" },
    });
    note(key, delivery === "Stored" ? `${file.name} is held by the server until they return` : `${file.name} sent`);
  } catch (e) {
    toast(describe(e));
  }
}

async function sendText(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim() || !app.current) return;
  const conversation = app.conversations.get(app.current);
  input.value = "";
  try {
    if (conversation.kind === "room") {
      await app.chat.post(conversation.target, text);
    } else {
      const delivery = await app.chat.send(conversation.target, text);
      // The server does not echo a direct message to its sender: show it here.
      message({
        id: uuid(),
        from: { id: app.me.id, name: app.me.name },
        to: { User: conversation.target },
        text,
        sent_at_ms: Date.now(),
        path: delivery === "Stored" ? "Stored" : "Relayed",
      });
    }
  } catch (e) {
    input.value = text;
    toast(describe(e));
  }
}

// ---- calls ----

function media(kind) {
  return kind === "video" ? ["Audio", "Video", "Data"] : ["Audio", "Data"];
}

function callRecord(id) {
  let record = app.calls.find((c) => c.id === id);
  if (!record) {
    record = { id, state: "new", startedAt: performance.now(), connectedMs: null, ended: null };
    app.calls.push(record);
  }
  return record;
}

async function startCall(kind) {
  const conversation = app.conversations.get(app.current);
  if (!conversation || conversation.kind !== "user" || app.call) return;
  try {
    const id = await app.chat.call(conversation.target, media(kind));
    app.call = { id, peer: conversation.target, peerName: conversation.title, caller: true, media: media(kind), pc: null, channel: null, pending: [] };
    callRecord(id).state = "calling";
    showCall(`Calling ${conversation.title}…`, "calling");
  } catch (e) {
    toast(describe(e));
  }
}

async function callEvent(event) {
  const [kind, value] = Object.entries(event)[0];
  const call = app.call;
  switch (kind) {
    case "Incoming":
      if (call) {
        // Busy in another call: say so at once.
        app.chat.rejectCall(value.call, true).catch(() => {});
        return;
      }
      app.call = { id: value.call, peer: value.from.id, peerName: value.from.name, caller: false, media: value.media, pc: null, channel: null, pending: [] };
      callRecord(value.call).state = "ringing";
      $("incoming-text").textContent = `${value.from.name} calls (${value.media.join(", ").toLowerCase()})`;
      $("incoming").hidden = false;
      app.chat.ringing(value.call).catch(() => {});
      return;
    case "Ringing":
      if (call?.id === value.call) showCall(`Ringing ${call.peerName}…`, "ringing");
      return;
    case "Accepted":
      if (call?.id !== value.call) return;
      $("incoming").hidden = true;
      callRecord(value.call).state = "accepted";
      if (call.caller) await offer(call);
      return;
    case "Sdp":
      if (call?.id !== value.call) return;
      await remoteDescription(call, value.kind, value.sdp);
      return;
    case "Ice":
      if (call?.id !== value.call) return;
      await remoteCandidate(call, value.candidate);
      return;
    case "Ended": {
      const record = callRecord(value.call);
      record.state = "ended";
      record.ended = value.reason;
      if (call?.id !== value.call) return;
      const reason = { HungUp: "hung up", Missed: "missed", Gone: "the other side went offline" }[value.reason] ?? value.reason.toLowerCase();
      endCall(`Call ended: ${reason}.`);
      return;
    }
    default:
  }
}

function showCall(title, state) {
  $("call").hidden = false;
  $("call-title").textContent = title;
  $("call-state").textContent = state;
  $("call-state").className = `badge ${state}`;
}

async function peerConnection(call) {
  const pc = new RTCPeerConnection({ iceServers: app.config.ice_servers });
  call.pc = pc;
  const record = callRecord(call.id);
  pc.onicecandidate = (e) => {
    if (e.candidate && app.call === call) app.chat.sendIce(call.id, e.candidate).catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    $("call-state").textContent = pc.connectionState;
    $("call-state").className = `badge ${pc.connectionState}`;
    record.connectionState = pc.connectionState;
    if (pc.connectionState === "connected" && record.connectedMs === null) {
      record.connectedMs = Math.round(performance.now() - record.startedAt);
      $("call-title").textContent = `In a call with ${call.peerName}`;
    }
  };
  pc.ontrack = (e) => {
    $("remote-video").srcObject = e.streams[0];
  };
  pc.ondatachannel = (e) => dataChannel(call, e.channel);
  const wantsVideo = call.media.includes("Video");
  try {
    call.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: wantsVideo });
    $("local-video").srcObject = call.stream;
    for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
  } catch (e) {
    toast(`No camera or microphone (${e.message}); the call goes on without them.`);
  }
  return pc;
}

function dataChannel(call, channel) {
  call.channel = channel;
  channel.onmessage = (e) => {
    app.dataMessages.push({ from: call.peerName, text: String(e.data) });
    const item = document.createElement("li");
    item.textContent = `${call.peerName}: ${e.data}`;
    $("call-messages").append(item);
  };
  channel.onopen = () => {
    callRecord(call.id).channelOpen = true;
  };
}

async function offer(call) {
  showCall(`Connecting to ${call.peerName}…`, "connecting");
  const pc = await peerConnection(call);
  dataChannel(call, pc.createDataChannel("chat"));
  const description = await pc.createOffer();
  await pc.setLocalDescription(description);
  await app.chat.sendSdp(call.id, "Offer", description.sdp);
}

async function accept() {
  const call = app.call;
  if (!call) return;
  $("incoming").hidden = true;
  try {
    await app.chat.acceptCall(call.id);
  } catch (e) {
    toast(describe(e));
    endCall(null);
    return;
  }
  showCall(`Connecting to ${call.peerName}…`, "connecting");
  await peerConnection(call);
  for (const pending of call.pending.splice(0)) await pending();
}

async function remoteDescription(call, kind, sdp) {
  if (!call.pc) {
    // The offer came before this side made its connection (it is still accepting).
    call.pending.push(() => remoteDescription(call, kind, sdp));
    return;
  }
  await call.pc.setRemoteDescription({ type: kind === "Offer" ? "offer" : "answer", sdp });
  call.remoteSet = true;
  for (const candidate of call.candidates ?? []) await call.pc.addIceCandidate(candidate);
  call.candidates = [];
  if (kind === "Offer") {
    const answer = await call.pc.createAnswer();
    await call.pc.setLocalDescription(answer);
    await app.chat.sendSdp(call.id, "Answer", answer.sdp);
  }
}

async function remoteCandidate(call, candidate) {
  const init = {
    candidate: candidate.candidate,
    sdpMid: candidate.sdp_mid,
    sdpMLineIndex: candidate.sdp_m_line_index,
    usernameFragment: candidate.username_fragment,
  };
  if (!call.pc || !call.remoteSet) {
    (call.candidates ??= []).push(init);
    return;
  }
  try {
    await call.pc.addIceCandidate(init);
  } catch (e) {
    console.warn("a candidate was refused", e);
  }
}

function endCall(message) {
  const call = app.call;
  app.call = null;
  $("incoming").hidden = true;
  $("call").hidden = true;
  $("call-messages").replaceChildren();
  if (call) {
    call.stream?.getTracks().forEach((t) => t.stop());
    call.channel?.close();
    call.pc?.close();
  }
  $("remote-video").srcObject = null;
  $("local-video").srcObject = null;
  if (message) toast(message);
}

async function hangUp() {
  const call = app.call;
  if (!call) return;
  try {
    await app.chat.hangUp(call.id);
  } catch (e) {
    // Ended already (the other side, or the server): the Ended event says how.
    endCall(describe(e));
  }
}

async function decline() {
  const call = app.call;
  if (!call) return;
  $("incoming").hidden = true;
  try {
    await app.chat.rejectCall(call.id, false);
  } catch (e) {
    endCall(describe(e));
  }
}

function sendData(event) {
  event.preventDefault();
  const input = $("call-text");
  const channel = app.call?.channel;
  if (!input.value || channel?.readyState !== "open") return;
  channel.send(input.value);
  const item = document.createElement("li");
  item.textContent = `me: ${input.value}`;
  $("call-messages").append(item);
  input.value = "";
}

// ---- start ----

async function main() {
  app.config = await loadConfig();
  $("signin-form").onsubmit = (e) => {
    e.preventDefault();
    signIn(false);
  };
  $("register").onclick = () => {
    if ($("signin-form").reportValidity()) signIn(true);
  };
  $("signout").onclick = async () => {
    endCall(null);
    await app.chat?.stop();
    location.reload();
  };
  $("compose").onsubmit = sendText;
  $("file").onchange = sendFile;
  $("group-form").onsubmit = async (e) => {
    e.preventDefault();
    const name = $("group-name").value.trim();
    if (!name) return;
    $("group-name").value = "";
    await openGroup(name);
  };
  $("invite-form").onsubmit = async (e) => {
    e.preventDefault();
    const conversation = app.conversations.get(app.current);
    const name = $("invite-name").value.trim();
    try {
      const user = await app.chat.lookup(name);
      await app.chat.invite(conversation.target, user.id);
      toast(`Invited ${user.name} to #${conversation.target}.`);
      $("invite-name").value = "";
    } catch (err) {
      toast(describe(err));
    }
  };
  $("audio-call").onclick = () => startCall("audio");
  $("video-call").onclick = () => startCall("video");
  $("accept").onclick = accept;
  $("decline").onclick = decline;
  $("hangup").onclick = hangUp;
  $("call-compose").onsubmit = sendData;
  document.body.dataset.ready = "yes";
}

main();
